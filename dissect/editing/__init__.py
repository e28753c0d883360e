"""Locating and editing rules: causal tracing, rank-one rewriting, MEMIT, and their ToyWorld evaluation.

Import the submodules directly (`from dissect.editing.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
