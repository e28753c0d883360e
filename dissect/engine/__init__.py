"""The dissection engine: mergeable streaming statistics, the tally, the two-phase pass, its results, and Ray sharding.

Import the submodules directly (`from dissect.engine.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
