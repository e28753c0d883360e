"""The run folder: atomic writes, the reader, the run.json schema, the lock, damage checks, export, comparison and pictures.

Import the submodules directly (`from dissect.runs.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
