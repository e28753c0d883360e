"""Ground-truth checks of a dissection on ToyWorld: planted detectors and scene ablations.

    found = planted_detectors(run, "conv6", min_iou=0.1)      # {"sun": 0.21, "roof": 0.17, ...}
    units = concept_units(run, "conv6", "sun")                 # units whose label is "sun"
    eff = ablation_effect(lm, "conv6", units, seed=2024, count=900)
    eff["before"]["beach"], eff["after"]["beach"]              # per-scene accuracy

`run` is a dissect.runs.folder.Run (or anything with `.units(layer)` returning units.csv).
"""
from __future__ import annotations

import numpy as np
import torch

from dissect.models.hooks import intervene
from dissect.toyworld.generate import render_parallel
from dissect.toyworld.train import _prep
from dissect.toyworld.world import SCENE_NAMES


def planted_detectors(run, layer: str, min_iou: float = 0.1,
                      categories=("object", "part")) -> dict[str, float]:
    """Distinct object/part concepts some unit is labelled with at IoU ≥ min_iou (best IoU)."""
    units = run.units(layer)
    best: dict[str, float] = {}
    for cat in categories:
        lab, iou = f"{cat}-label", f"{cat}-iou"
        if lab not in units:
            continue
        for name, v in zip(units[lab], units[iou]):
            if v >= min_iou and v > best.get(name, 0.0):
                best[name] = float(v)
    return dict(sorted(best.items(), key=lambda kv: -kv[1]))


def concept_units(run, layer: str, concept: str, min_iou: float = 0.04,
                  category: str = "object") -> list[int]:
    """Units whose best `category` label is `concept` at IoU ≥ min_iou."""
    u = run.units(layer)
    sel = (u[f"{category}-label"] == concept) & (u[f"{category}-iou"] >= min_iou)
    return [int(x) for x in u.loc[sel, "unit"]]


@torch.no_grad()
def scene_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, layer: str | None = None,
                   units: list[int] | None = None, batch: int = 200) -> dict[str, float]:
    """Per-scene accuracy on uint8 N×3×112×112 images, with `units` of `layer` zeroed."""
    model.eval()
    edits = {}
    if layer and units:
        idx = torch.tensor(units, dtype=torch.long)

        def zero(out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, idx] = 0
            return out
        edits = {layer: zero}
    preds = []
    with intervene(model, edits):
        for i in range(0, len(x), batch):
            preds.append(model(_prep(torch.from_numpy(x[i:i + batch]))).argmax(1).numpy())
    p = np.concatenate(preds)
    acc = {name: float((p[y == k] == k).mean()) for k, name in enumerate(SCENE_NAMES)
           if (y == k).any()}
    acc["all"] = float((p == y).mean())
    return acc


def ablation_effect(model: torch.nn.Module, layer: str, units: list[int], seed: int = 2024,
                    count: int = 900, workers: int = 1) -> dict[str, dict[str, float]]:
    """Per-scene accuracy before/after zeroing `units`, on `count` images of world `seed`."""
    x, y = render_parallel(seed, count, workers=workers, chunk=300)
    return {"before": scene_accuracy(model, x, y),
            "after": scene_accuracy(model, x, y, layer, units)}
