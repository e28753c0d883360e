"""Segmenters: concept labels for any image, in the batch type the Broden reader yields."""
