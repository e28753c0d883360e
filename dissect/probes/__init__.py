"""Probe sets: images with concept labels (Broden, ToyWorld, folder + segmenter) in one item/batch type; splits and image decoding.

Import the submodules directly (`from dissect.probes.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
