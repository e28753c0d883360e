"""Trust statistics of a layer's labels: per-image statistics, permutation and spatial nulls, the bootstrap, baselines.

Import the submodules directly (`from dissect.trust.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
