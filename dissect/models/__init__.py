"""Models: the loaded-model type, the registry of names (torchvision, presets, ToyWorld, timm:, hf:, file.py:factory), checkpoints, downloads, hooks.

Import the submodules directly (`from dissect.models.<module> import ...`); this package
exports nothing itself, so importing one idea never loads the others.
"""
