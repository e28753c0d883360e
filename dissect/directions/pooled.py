"""Pooled layer features: one forward pass per batch for several layers, pooled as the head pools.

    pooling = head_pooling(lm.model)                       # "max" for ToyWorld, "mean" for ResNets
    feats = pooled_features(lm, batches, ["conv5", "conv6"], pooling)
    feats.layers["conv6"]      # float32 [N, K]
    feats.logits               # float32 [N, classes] (only with logits=True: the full pass runs)

`pooling` is "max" or "mean" (global over positions) or "spatial" (every position a row:
[N, K, h, w] kept as it is). `check_channels` refuses layers whose output is not B×K×h×w.
Results for a labelled set can be cached on disk (`cached_set_features`), keyed by model,
weights, set, layers and pooling.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from dissect.errors import DirectionError
from dissect.models.hooks import capture, stopped_forward

POOLINGS = ("auto", "max", "mean", "spatial")


def head_pooling(model: nn.Module) -> str:
    """How the network's own head pools: "max" when it has a global max pool, else "mean"."""
    for m in model.modules():
        if isinstance(m, (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d)):
            return "max"
    return "mean"


def resolve_pooling(model: nn.Module, pooling: str | None) -> str:
    """`auto`/None -> the head's pooling; max|mean|spatial kept; anything else DirectionError."""
    pooling = (pooling or "auto").lower()
    if pooling not in POOLINGS:
        raise DirectionError(f"--pooling {pooling}: use {', '.join(POOLINGS)}")
    return head_pooling(model) if pooling == "auto" else pooling


def pool(out: torch.Tensor, pooling: str) -> torch.Tensor:
    """B×K×h×w -> B×K (max or mean over positions); spatial returns `out` unchanged."""
    if pooling == "max":
        return out.amax(dim=(2, 3))
    if pooling == "mean":
        return out.mean(dim=(2, 3))
    return out


def check_channels(layer: str, out) -> None:
    """DirectionError unless `out` is a B×K×h×w tensor (a layer with channels)."""
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = "×".join(map(str, out.shape)) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DirectionError(f"layer '{layer}' has no channels (its output is {shape}, not "
                             "B×K×h×w); pick a convolutional layer (list them with: "
                             "python -m dissect layers --model M)")


@dataclass
class Features:
    layers: dict[str, np.ndarray]              # layer -> float32 [N, K] (or [N, K, h, w])
    logits: np.ndarray | None = None           # float32 [N, classes]
    pooling: str = "max"
    meta: dict = field(default_factory=dict)


@torch.no_grad()
def pooled_features(lm, batches: Iterable[torch.Tensor], layers: Sequence[str], pooling: str,
                    logits: bool = False) -> Features:
    """Pool each layer's output over `batches` (images01 B×3×H×W) in one pass per batch.

    Without `logits` the forward pass stops after the last of `layers`.
    """
    layers = list(layers)
    parts: dict[str, list[np.ndarray]] = {l: [] for l in layers}
    outs: list[np.ndarray] = []
    model = lm.model
    with capture(model, layers, stop_after=not logits) as acts:
        for x01 in batches:
            x = lm.normalize(x01.to(lm.device))
            if logits:
                outs.append(model(x).float().cpu().numpy())
            else:
                stopped_forward(model, x)
            for l in layers:
                check_channels(l, acts.get(l))
                parts[l].append(pool(acts[l].float(), pooling).cpu().numpy())
    return Features({l: np.concatenate(v) if v else np.zeros((0, 0), np.float32)
                     for l, v in parts.items()},
                    np.concatenate(outs) if outs else None, pooling)


def _cache_dir() -> Path:
    from dissect.toyworld import cache_root
    return cache_root().parent / "features"


def cached_set_features(lm, lset, layers: Sequence[str], pooling: str, batch_size: int = 32,
                        key: dict | None = None, use_cache: bool = True) -> Features:
    """`pooled_features` of a labelled set with logits, cached on disk by model/set/layers."""
    ident = {"model": lm.name, "weights": str(lm.weights), "set": lset.spec, "n": len(lset),
             "paths": hashlib.sha1("\n".join(lset.paths).encode()).hexdigest(),
             "layers": list(layers), "pooling": pooling, **(key or {})}
    weights = Path(str(lm.weights))
    if weights.is_file():
        ident["mtime"] = os.path.getmtime(weights)
    params = list(lm.model.parameters())
    if params:        # retrained weights under the same name get new features
        ident["params"] = hashlib.sha1(b"".join(
            p.detach().float().cpu().numpy().tobytes() for p in (params[0], params[-1]))).hexdigest()
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    path = _cache_dir() / f"{digest}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path) as z:
                return Features({l: z[f"layer:{l}"] for l in layers}, z["logits"], pooling,
                                {"cached": True})
        except (OSError, KeyError, ValueError):
            pass            # a damaged cache file: recompute and overwrite
    feats = pooled_features(lm, (x for _i, x in lset.batches(batch_size)), layers, pooling,
                            logits=True)
    if use_cache:
        from dissect.runs.atomic import atomic_write
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"layer:{l}": v for l, v in feats.layers.items()}
        atomic_write(path, lambda f: np.savez(f, logits=feats.logits, **arrays))
    feats.meta["cached"] = False
    return feats
