"""Interventions on units: ablation, replay from a layer, labelled sets and per-class accuracy, unit importance.

Import the submodules directly (`from dissect.interventions.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
