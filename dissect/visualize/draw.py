"""Draw, check and save visualisations: the one call the CLI and the studio make.

    rows = draw(lm, "conv6", Targets.of_units([3, 9]), VisConfig(size=112), out="vis/",
                run=open_run("runs/tw"), kind="unit")
    rows[0]   # {"unit": 3, "path": "vis/unit_3.png", "activation": 4.2, "flat": False,
              #  "best_natural": 1.9, "reach": 2.2, "stability": 0.81, "path_score": 0.1,
              #  "trust": "reaches 2.2× the best natural image; stable across seeds; ..."}

With `trust` (the default) each target is drawn from two starts in the same batch (the
stability check), and with a run its top natural images give the path check and its
imgmax.npy the best natural activation (units and features of that run's layer).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dissect.visualize.config import VisConfig
from dissect.visualize.objectives import Targets
from dissect.visualize.optimize import Progress, Visualisation, optimise
from dissect.visualize.png import write_png
from dissect.visualize import trust as tr

N_TOP, N_OTHER = 5, 16


def file_name(kind: str, name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:60]
    return f"{kind}_{safe}.png"


def _natural(run, layer: str, index: int, probe) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(top N×3×H×W, other M×3×H×W) probe images of unit `index` of the run's `layer`."""
    top = [int(i) for i in run.topk(layer)["indices"][index][:N_TOP] if i >= 0]
    n = len(run.images)
    rest = [i for i in np.linspace(0, n - 1, N_OTHER + len(top)).round().astype(int)
            if i not in top][:N_OTHER]
    if not top or not rest:
        return None
    load = lambda ids: torch.stack([probe[i].image.float() for i in ids])  # noqa: E731
    return load(top), load(rest)


def natural_figures(run, layer: str, indices: list[int], lm, vis: torch.Tensor, size: int,
                    canvas_layer: str, targets: Targets
                    ) -> tuple[list[float | None], list[float | None]]:
    """Best natural activation (imgmax max) and path score for each target index."""
    best: list[float | None] = [None] * len(indices)
    path: list[float | None] = [None] * len(indices)
    if run is None:
        return best, path
    imgmax = run.imgmax(layer)
    best = [float(np.nanmax(imgmax[:, i])) if imgmax.shape[1] > i else None for i in indices]
    from dissect.probes.registry import open_run_probe
    try:
        probe = open_run_probe(run)
    except Exception:  # noqa: BLE001 - no probe: no path check, said as "no figure"
        return best, path
    layers = tr.earlier_layers(lm, canvas_layer, size)
    for j, i in enumerate(indices):
        nat = _natural(run, layer, i, probe)
        if nat is not None and layers:
            path[j] = float(tr.path_check(lm, layers, canvas_layer, targets.pick(j, 1),
                                          vis[j:j + 1], [nat[0]], [nat[1]])[0])
    return best, path


def draw(lm, layer: str, targets: Targets, cfg: VisConfig, out: str | os.PathLike | None = None,
         *, run=None, run_layer: str | None = None, kind: str = "unit", trust: bool = True,
         progress: Progress | None = None) -> list[dict]:
    """Optimise one image per target, measure trust, write one PNG per target into `out`."""
    vis: Visualisation = optimise(lm, layer, targets, cfg, starts=2 if trust else 1,
                                  progress=progress)
    indices = [int(n) for n in targets.names] if kind in ("unit", "feature") else []
    natural = None
    if trust and kind == "unit" and run is not None:
        natural = run.imgmax(run_layer or layer)      # z-scores the stability check
    stab = tr.stability(lm, layer, vis.images, vis.second, natural) if trust \
        else [None] * len(targets)
    best, path = ([None] * len(targets),) * 2
    if trust and indices and run is not None:
        best, path = natural_figures(run, run_layer or layer, indices, lm, vis.images,
                                     cfg.size, layer, targets)
    rows = []
    for j, name in enumerate(targets.names):
        flat = bool(vis.flat[j])
        act = float(vis.activation[j])
        reach = act / best[j] if kind == "unit" and best[j] and best[j] > 0 else None
        s = None if stab[j] is None or flat else float(stab[j])
        p = None if path[j] is None or flat or not np.isfinite(path[j]) else float(path[j])
        row = {"unit": int(name) if kind != "direction" else name, "kind": kind,
               "path": None, "activation": round(act, 6), "flat": flat,
               "best_natural": best[j], "reach": None if reach is None else round(reach, 4),
               "stability": None if s is None else round(s, 4),
               "path_score": None if p is None else round(p, 4),
               "trust": tr.words(reach, s, p, flat)}
        if out is not None:
            row["path"] = str(write_png(vis.images[j], Path(out) / file_name(kind, name)))
        rows.append(row)
    return rows
