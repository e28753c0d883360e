"""Neuron dissection: what each unit of a CNN detects, and whether the network relies on it.

    python -m dissect run --model resnet18 --weights none --layer layer4 --probe toyworld:200 --out runs/r18
"""

__version__ = "0.1.0"
