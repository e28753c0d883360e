"""Concept directions: pooled features, directions (mean, PCA, probe), steering, layer readout, TCAV, concept presence.

Import the submodules directly (`from dissect.directions.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
