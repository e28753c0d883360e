"""The last step of a dissection: statistics -> run-folder files (all written atomically).

    write_results(writer, cfg, probe, concepts, categories, concept_cat, layers, thresholds)

Per layer: units.csv (best label per category, then overall), iou.npy, topk.npz, imgmax.npy,
hist.npz, tally.npz (the integer tallies behind every denominator) and acts.npy: the
activation cache itself (hard-linked, in the cache's dtype), so every reader of a unit's active
pixels compares exactly the values the engine compared (one definition of "active").
Also images.csv and concepts.csv. Called by dissect.engine.dissection; see DESIGN.md for the schema.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dissect.engine.act_cache import keep_as
from dissect.trust.columns import trust_columns


def label_units(iou: np.ndarray, concepts: pd.DataFrame, categories: list[str],
                concept_cat: np.ndarray, act_cat: np.ndarray, truth: np.ndarray,
                inter: np.ndarray, iou_threshold: float) -> pd.DataFrame:
    """Best concept per category (first max), then the best category (first max)."""
    k = iou.shape[0]
    names = concepts["name"].to_numpy()
    ids = concepts["concept"].to_numpy()
    score = np.zeros((len(categories), k))
    best = np.full((len(categories), k), -1, dtype=np.int64)
    cols: dict[str, object] = {}
    for ci, cat in enumerate(categories):
        sel = np.flatnonzero(concept_cat == ci)
        if len(sel) == 0:
            cols.update({f"{cat}-label": [""] * k, f"{cat}-concept": np.zeros(k, np.int64),
                         f"{cat}-iou": np.zeros(k), f"{cat}-truth": np.zeros(k, np.int64),
                         f"{cat}-activation": act_cat[:, ci] if act_cat.size else np.zeros(k),
                         f"{cat}-intersect": np.zeros(k, np.int64)})
            continue
        j = sel[np.argmax(iou[:, sel], axis=1)]
        best[ci], score[ci] = j, iou[np.arange(k), j]
        cols.update({f"{cat}-label": names[j], f"{cat}-concept": ids[j],
                     f"{cat}-iou": score[ci], f"{cat}-truth": truth[j],
                     f"{cat}-activation": act_cat[:, ci], f"{cat}-intersect": inter[np.arange(k), j]})
    bc = np.argmax(score, axis=0)
    bj = best[bc, np.arange(k)]
    top = score[bc, np.arange(k)]
    df = pd.DataFrame({
        "unit": np.arange(k),
        "category": [categories[c] for c in bc],
        "label": [names[j] if j >= 0 else "" for j in bj],
        "concept": [int(ids[j]) if j >= 0 else 0 for j in bj],
        "iou": top,
    })
    df["interpretable"] = df["iou"] >= iou_threshold
    for key, v in cols.items():
        df[key] = v
    return df


def write_results(writer, cfg, probe, concepts: pd.DataFrame, categories: list[str],
                  concept_cat: torch.Tensor, layers: dict, thresholds: dict) -> None:
    images = probe.images.copy()
    if "width" not in images or "height" not in images:
        size = getattr(probe, "image_size", None) or tuple(probe[0].image.shape[-2:])
        images["height"], images["width"] = int(size[0]), int(size[1])
    if "split" not in images:
        images["split"] = ""
    images = images[["index", "path", "split", "width", "height"]
                    + [c for c in images.columns
                       if c not in ("index", "path", "split", "width", "height")]]
    images["index"] = np.arange(len(images))
    writer.write_csv("images.csv", images)
    first = next(iter(layers.values()))
    ctab = pd.DataFrame({
        "concept": concepts["concept"].astype(np.int64), "name": concepts["name"],
        "category": concepts["category"], "images": first.tally.images.numpy(),
        "pixels": first.tally.truth.numpy()})
    writer.write_csv("concepts.csv", ctab)
    cc = concept_cat.numpy()
    for done, (name, L) in enumerate(layers.items()):
        base = f"layers/{name}"
        t = L.tally
        iou = t.iou(cc, cfg.denominator)
        act_cat = {"nd": t.act_nd.numpy(), "netdissect-lite": t.act_lite.numpy(),
                   "global": t.act.numpy()[:, None].repeat(len(categories), 1)}[cfg.denominator]
        units = label_units(iou, concepts, categories, cc, act_cat, t.truth.numpy(),
                            t.inter.numpy(), cfg.iou_threshold)
        units.insert(5, "threshold", thresholds[name].numpy())
        units, nulls = trust_columns(units, L.trust.finish(), iou, cfg, images, cc,
                                     len(categories), done)
        if nulls:
            writer.write_npz(f"{base}/null.npz", **nulls)
        writer.write_npy(f"{base}/iou.npy", iou.astype(np.float32))
        writer.write_npz(f"{base}/tally.npz", inter=t.inter.numpy(), truth=t.truth.numpy(),
                         act=t.act.numpy(), act_nd=t.act_nd.numpy(),
                         act_lite=t.act_lite.numpy(), concept_category=cc)
        idx = L.top.indices.numpy().astype(np.int64)
        writer.write_npz(f"{base}/topk.npz", indices=idx,
                         values=L.top.values.numpy().astype(np.float32), maps=L.topk_maps())
        writer.write_npy(f"{base}/imgmax.npy", np.asarray(L.imgmax, dtype=np.float32))
        writer.write_npz(f"{base}/hist.npz", edges=L.hist.edges.numpy().astype(np.float32),
                         counts=L.hist.counts.numpy().astype(np.int64))
        if cfg.keep_acts and L.cache is not None:     # a Ray run whose workers kept theirs: None
            keep_as(L.cache, writer.file(f"{base}/acts.npy"))   # the engine's own values
        writer.write_csv(f"{base}/units.csv", units)
        writer.progress("write", done + 1, len(layers))
