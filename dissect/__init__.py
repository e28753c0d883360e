"""Neuron dissection: what each unit of a vision model detects, and whether the network relies on it.

The names a notebook needs, each one line of use:

    import dissect
    lm = dissect.load_model("toyworld")                        # network + weights + preprocessing + classes
    cfg = dissect.DissectConfig(model="toyworld", layers=["conv6"], probe="toyworld:200")
    run = dissect.open_run(dissect.dissect(cfg, "runs/nb"))    # dissect, then read the run folder
    sun = run.units("conv6").query("label == 'sun'")["unit"].tolist()
    probe = dissect.open_probe("toyworld:200")                 # images with concept labels
    x = lm.normalize(probe[0].image[None])
    with dissect.ablate(lm.model, [dissect.Intervention("conv6", sun)]):   # hooks removed on exit
        logits = lm.model(x)
    with dissect.capture(lm.model, ["conv6"]) as acts:         # a copy of each layer's output
        lm.model(x)
    with dissect.intervene(lm.model, {"conv6": lambda out: 2 * out}):      # any edit of an output
        lm.model(x)

Also: `list_runs(root)`, `list_layers(lm)`, `open_run_probe(run)`. The command line is
`python -m dissect --help`; the subpackages (models, probes, engine, runs, trust, formulas,
interventions, directions, editing, toyworld) hold everything else, one idea each.
Importing this package is cheap: each name loads its module (and torch) on first use.
"""
from __future__ import annotations

import importlib

from dissect.version import __version__

_PUBLIC = {
    "load_model": "dissect.models.registry",
    "list_layers": "dissect.models.registry",
    "capture": "dissect.models.hooks",
    "intervene": "dissect.models.hooks",
    "open_probe": "dissect.probes.registry",
    "open_run_probe": "dissect.probes.registry",
    "DissectConfig": "dissect.engine.config",
    "dissect": "dissect.engine.dissection",
    "open_run": "dissect.runs.folder",
    "list_runs": "dissect.runs.folder",
    "ablate": "dissect.interventions.ablation",
    "Intervention": "dissect.interventions.ablation",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    """Load a public name's module on first use (PEP 562), so `import dissect` stays cheap."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'dissect' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
