"""Baselines for a layer's label counts, in the spirit of Bau et al. 2017 (NetDissect).

    q = haar_orthogonal(512, seed=0)                       # Haar-random orthogonal K×K
    rotation_baseline(cfg, probe, layers, ..., writer)     # the engine calls it (--baseline rotation)
    random_init_baseline(cfg, out, dissect)                # --baseline random-init: a linked run
    baseline_counts(run, layer)                            # {"rotation": {...}, "random-init": {...}}

`rotation`: the cached activations of each layer, rotated per pixel by a Haar-random orthogonal
matrix (the unit basis turned, nothing else changed, no new forward pass), thresholded at their
own exact quantile and tallied against the same labels. Written to
layers/<layer>/baseline_rotation.json (counts) and baseline_rotation_units.csv (labels).
`random-init`: the same architecture with random weights, dissected into <run>/baselines/random-init
and linked from run.json ("baselines").
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

ROTATION_FILE = "baseline_rotation.json"
RANDOM_INIT_DIR = "baselines/random-init"


def haar_orthogonal(k: int, seed: int = 0) -> torch.Tensor:
    """A K×K orthogonal matrix drawn from the Haar measure (QR of a Gaussian, signs fixed)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, k, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return (q * torch.sign(torch.diagonal(r))[None, :]).float()


def _counts(units: pd.DataFrame, threshold: float) -> dict:
    hit = units[units["iou"] >= threshold]
    return {"units": int(len(units)), "interpretable": int(len(hit)),
            "unique": int(hit["label"].nunique())}


def rotation_baseline(cfg, probe, layers: dict, concepts: pd.DataFrame, categories: list[str],
                      lut: torch.Tensor, concept_cat: torch.Tensor, writer,
                      chunk: int = 64) -> None:
    """Rotate each layer's cached activations, re-threshold, re-tally, write the counts."""
    from dissect.engine.phases import batches, label_view
    from dissect.probes.types import probe_loader
    from dissect.engine.results import label_units
    from dissect.engine.stats import IoUTally, TailQuantile
    from dissect.engine.tally import BatchLabels, tally_batch
    n = len(probe)
    rot = {}
    for name, L in layers.items():
        k, h, w = L.shape
        q = haar_orthogonal(k, cfg.seed)
        quant = TailQuantile(k, cfg.quantile, n * h * w)
        for s in range(0, n, chunk):
            a = torch.from_numpy(np.ascontiguousarray(L.cache[s:s + chunk], dtype=np.float32))
            quant.add(torch.einsum("ij,bjhw->bihw", q, a))
        rot[name] = (q, torch.from_numpy(quant.readout()), IoUTally(k, len(concepts),
                                                                    len(categories)))
    for batch in batches(probe_loader(label_view(probe), cfg.batch_size, cfg.workers)):
        labels = BatchLabels.from_batch(batch, lut, probe.mask_size)
        idx = batch.index.numpy()
        for name, L in layers.items():
            q, th, tally = rot[name]
            a = torch.from_numpy(np.ascontiguousarray(L.cache[idx], dtype=np.float32))
            tally.add(tally_batch(torch.einsum("ij,bjhw->bihw", q, a), th, labels,
                                  concept_cat, len(categories)))
    cc = concept_cat.numpy()
    for name, (q, th, tally) in rot.items():
        act = {"nd": tally.act_nd.numpy(), "netdissect-lite": tally.act_lite.numpy(),
               "global": tally.act.numpy()[:, None].repeat(len(categories), 1)}[cfg.denominator]
        units = label_units(tally.iou(cc, cfg.denominator), concepts, categories, cc, act,
                            tally.truth.numpy(), tally.inter.numpy(), cfg.iou_threshold)
        units.insert(5, "threshold", th.numpy())
        writer.write_csv(f"layers/{name}/baseline_rotation_units.csv", units)
        writer.write_json(f"layers/{name}/{ROTATION_FILE}",
                          {"baseline": "rotation", "seed": cfg.seed,
                           **_counts(units, cfg.iou_threshold)})


def random_init_baseline(cfg, out: Path, dissect: Callable[..., Path],
                         progress: bool = True) -> Path:
    """Dissect the same architecture with random weights into <out>/baselines/random-init and
    link it from <out>/run.json; returns the baseline's folder. `dissect` is the engine's
    dissect function (passed in: the engine calls this module, not the other way round)."""
    from dissect.runs.schema import read_info
    from dissect.runs.atomic import write_json
    base = dataclasses.replace(cfg, weights="none", baseline="")
    target = Path(out) / RANDOM_INIT_DIR
    dissect(base, target, progress=progress)
    info = read_info(out)
    info["baselines"] = {**(info.get("baselines") or {}), "random-init": RANDOM_INIT_DIR}
    write_json(Path(out) / "run.json", info)
    return target


def baseline_counts(run, layer: str) -> dict[str, dict]:
    """The layer's baseline counts that the run has: {"rotation": {units, interpretable, unique},
    "random-init": {...}}; {} when it has none."""
    out: dict[str, dict] = {}
    f = run.layer_dir(layer) / ROTATION_FILE
    if os.path.lexists(f):
        from dissect.runs.safe import read_json
        out["rotation"] = read_json(f, run.path, owner=f"run '{run.name}'",
                                    fix="run the dissection again with --baseline rotation")
    link = (run.info.get("baselines") or {}).get("random-init")
    if link:
        from dissect.runs.folder import open_run
        try:
            other = open_run(Path(run.path) / link)
            if layer in other.layers:
                t = float(other.config.get("iou_threshold") or 0.04)
                out["random-init"] = _counts(other.units(layer), t)
        except (ValueError, OSError):
            pass
    return out
