"""Causal tracing for CNNs: corrupt a concept's pixels, restore clean activations, measure.

    res = trace(lm, images01, masks, ["conv1", "conv4", "conv6"], corrupt="noise", seed=0)
    res.effect["conv4"]          # mean indirect effect of restoring all of conv4
    res.grid["conv4"]            # h×w: mean indirect effect of restoring one cell of conv4
    res.cells["conv4"][b]        # the same for image b alone
    res.to_json()

Per image: the clean top class c; the concept's pixels (mask) are corrupted (seeded Gaussian
noise of 3× the pixel std, a blur, or grey); then the clean output of one layer is put back,
at every position or at one spatial cell (all channels), and the indirect effect is
p_c(restored) − p_c(corrupted), as in ROME's causal trace. Restoring a cell whose activations
the corruption did not change (outside every receptive field of the mask) changes nothing:
those cells are given 0 without running. The other cells run exactly, either through a
windowed suffix (chains of conv/BN/ReLU ending in global pooling + linear, e.g. the ToyWorld
CNN: only the cone of cells that the restored cell reaches is recomputed, as the corrupted
run plus the change that the restored cell makes; see `ConvChain`) or, for any other model,
a batched forward with a hook per restored cell. For a chain, restoring every position of a
layer is the clean run itself, so its p is the clean p (no forward is run for it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dissect.errors import TraceError
from dissect.editing.conv_chain import ConvChain
from dissect.models.hooks import capture, get_layer, intervene

CORRUPTIONS = ("noise", "blur", "gray")
NOISE_SCALE = 3.0
SAME_TOL = 1e-5        # a cell counts as unchanged when max |clean − corrupt| ≤ tol · max |clean|


# ---- corruption ------------------------------------------------------------------------------

def corrupt_images(x01: torch.Tensor, masks: torch.Tensor, mode: str = "noise", seed: int = 0,
                   std: float | None = None) -> torch.Tensor:
    """x01 (B×3×H×W) with the pixels under `masks` (B×H×W bool) corrupted; never in place.

    noise: + NOISE_SCALE·std·N(0, 1) (std = the pixel std of `x01` unless given), seeded;
    blur: a Gaussian blur (σ = 6 px at 224) inside the mask; gray: the mask filled with 0.5.
    """
    if mode not in CORRUPTIONS:
        raise TraceError(f"unknown --corrupt '{mode}': use {', '.join(CORRUPTIONS)}")
    m = masks[:, None].to(x01.dtype)
    if mode == "noise":
        s = float(x01.std()) if std is None else float(std)
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(x01.shape, generator=g).to(x01.device, x01.dtype)
        return x01 + m * NOISE_SCALE * s * noise
    if mode == "blur":
        import torchvision.transforms.v2.functional as TF
        sigma = 6.0 * x01.shape[-1] / 224
        k = int(2 * math.ceil(3 * sigma) + 1)
        other = TF.gaussian_blur(x01, [k, k], [sigma, sigma])
    else:
        other = torch.full_like(x01, 0.5)
    return x01 * (1 - m) + other * m


# ---- results ---------------------------------------------------------------------------------

@dataclass
class TraceResult:
    layers: list[str]
    p_clean: np.ndarray                      # [B] p of the clean top class, clean image
    p_corrupt: np.ndarray                    # [B] the same on the corrupted image
    top: np.ndarray                          # [B] clean top class
    restored_all: dict[str, np.ndarray]      # layer -> [B] p after restoring every position
    cells: dict[str, np.ndarray]             # layer -> [B, h, w] indirect effect by cell
    masks: dict[str, np.ndarray] = field(default_factory=dict)   # layer -> [B, h, w] bool
    runs: dict[str, int] = field(default_factory=dict)           # layer -> cells actually run
    method: str = ""

    @property
    def effect(self) -> dict[str, float]:
        return {l: float(np.mean(self.restored_all[l] - self.p_corrupt)) for l in self.layers}

    @property
    def grid(self) -> dict[str, np.ndarray]:
        return {l: self.cells[l].mean(0) for l in self.layers if l in self.cells}

    def concentration(self, layer: str) -> float:
        """Share of the positive per-cell effect on cells the concept covers (mean over images)."""
        if layer not in self.cells or layer not in self.masks:
            return float("nan")
        e = np.clip(self.cells[layer], 0, None)
        tot = e.sum((1, 2))
        inside = (e * self.masks[layer]).sum((1, 2))
        ok = tot > 0
        return float((inside[ok] / tot[ok]).mean()) if ok.any() else float("nan")

    def to_json(self) -> dict:
        out = []
        for l in self.layers:
            row = {"layer": l, "effect": round(self.effect[l], 6),
                   "p_restored": round(float(self.restored_all[l].mean()), 6)}
            if l in self.cells:
                g = self.grid[l]
                peak = np.unravel_index(int(np.argmax(g)), g.shape)
                row.update({"shape": list(g.shape), "grid": np.round(g, 6).tolist(),
                            "peak": [int(peak[0]), int(peak[1])],
                            "max_cell_effect": round(float(g.max()), 6),
                            "concentration": round(self.concentration(l), 6),
                            "cells_run": int(self.runs.get(l, 0))})
            out.append(row)
        return {"images": int(len(self.p_clean)),
                "p_clean": round(float(self.p_clean.mean()), 6),
                "p_corrupt": round(float(self.p_corrupt.mean()), 6),
                "total_effect": round(float((self.p_clean - self.p_corrupt).mean()), 6),
                "method": self.method, "layers": out}


# ---- the windowed suffix for conv chains -----------------------------------------------------



# ---- the trace -------------------------------------------------------------------------------

def changed_cells(clean: torch.Tensor, corrupt: torch.Tensor, tol: float = SAME_TOL) -> torch.Tensor:
    """B×h×w bool: cells whose activations (any channel) the corruption changed."""
    scale = clean.abs().amax((1, 2, 3), keepdim=True).clamp_min(1e-12)
    return ((clean - corrupt).abs() > tol * scale).any(1)


def _prob(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(1)[torch.arange(len(target)), target]


@torch.no_grad()
def trace_batch(lm, x_clean: torch.Tensor, x_corrupt: torch.Tensor, layers: Sequence[str],
                per_cell: bool = True, variants: int = 512, generic: bool = False) -> dict:
    """Tracing on one batch of clean/corrupted images01: see `trace`."""
    model, norm = lm.model, lm.normalize
    B = len(x_clean)
    with capture(model, list(layers)) as clean:
        logits = model(norm(x_clean))
    top = logits.argmax(1)
    p_clean = _prob(logits, top)
    chain = None if generic else ConvChain.of(model)
    if chain is not None and not set(layers) <= set(chain.names):
        chain = None
    if chain is not None:       # one corrupted pass records every stage (and conv) output
        with chain.record(model) as corr:
            p_corrupt = _prob(model(norm(x_corrupt)), top)
    else:
        with capture(model, list(layers)) as corr:
            p_corrupt = _prob(model(norm(x_corrupt)), top)
    out = {"top": top, "p_clean": p_clean, "p_corrupt": p_corrupt, "all": {}, "cells": {},
           "runs": {}, "method": "windowed suffix" if chain is not None else "hooked forward"}
    for layer in layers:
        c_out = clean[layer]
        if chain is not None:   # a chain's suffix sees only this layer: the clean run's own
            out["all"][layer] = p_clean.clone()
        else:
            with intervene(model, {layer: lambda o, c=c_out: c.clone()}):
                out["all"][layer] = _prob(model(norm(x_corrupt)), top)
        if not per_cell or c_out.dim() != 4:
            continue
        h, w = c_out.shape[-2:]
        grid = torch.zeros(B, h, w)
        todo = torch.nonzero(changed_cells(c_out, corr[layer]))         # n×3 (b, i, j)
        out["runs"][layer] = len(todo)
        for s in range(0, len(todo), variants):
            part = todo[s:s + variants]
            b, ij = part[:, 0], part[:, 1:]
            vals = c_out[b, :, ij[:, 0], ij[:, 1]]
            if chain is not None:
                p = chain.suffix_probs(layer, corr, b, ij, vals, top[b])
            else:
                p = _restore_cells_generic(lm, x_corrupt, layer, b, ij, vals, top[b])
            grid[b, ij[:, 0], ij[:, 1]] = (p - p_corrupt[b]).float().cpu()
        out["cells"][layer] = grid
    return out


def _restore_cells_generic(lm, x_corrupt, layer, b, ij, vals, target, chunk: int = 64):
    """Any model: one forward per variant (batched), a hook restoring that variant's cell."""
    model, norm = lm.model, lm.normalize
    res = []
    for s in range(0, len(b), chunk):
        bb, cc, vv = b[s:s + chunk], ij[s:s + chunk], vals[s:s + chunk]
        rows = torch.arange(len(bb))

        def edit(o, cc=cc, vv=vv, rows=rows):
            o = o.clone()
            o[rows, :, cc[:, 0], cc[:, 1]] = vv.to(o.dtype)
            return o
        with intervene(model, {layer: edit}):
            res.append(_prob(model(norm(x_corrupt[bb])), target[s:s + chunk]))
    return torch.cat(res)


def downsample_mask(masks: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """B×H×W bool -> B×h×w: the cells any of whose pixels the concept covers."""
    m = F.adaptive_max_pool2d(masks[:, None].float(), shape)[:, 0]
    return (m > 0).numpy()


def trace(lm, images01: torch.Tensor, masks: torch.Tensor, layers: Sequence[str],
          corrupt: str = "noise", seed: int = 0, per_cell: bool = True, batch_size: int = 25,
          std: float | None = None, generic: bool = False,
          progress: Callable[[int, int], None] | None = None) -> TraceResult:
    """Trace `layers` over images01 (N×3×H×W in [0, 1]) whose concept pixels are `masks` (N×H×W)."""
    if not layers:
        raise TraceError("give at least one layer: --layers conv1,conv4 (list them with "
                         "python -m dissect layers --model M)")
    for l in layers:
        get_layer(lm.model, l)
    if len(images01) == 0:
        raise TraceError("no images contain the concept; choose another concept or a larger set")
    std = float(images01.std()) if std is None else std
    x_bad = corrupt_images(images01, masks, corrupt, seed=seed, std=std)
    parts = []
    for s in range(0, len(images01), batch_size):
        e = min(s + batch_size, len(images01))
        parts.append(trace_batch(lm, images01[s:e].to(lm.device), x_bad[s:e].to(lm.device),
                                 layers, per_cell=per_cell, generic=generic))
        if progress:
            progress(e, len(images01))
    cat = lambda key: torch.cat([p[key] for p in parts]).float().cpu().numpy()  # noqa: E731
    cells = {l: torch.cat([p["cells"][l] for p in parts]).numpy()
             for l in layers if l in parts[0]["cells"]}
    return TraceResult(
        list(layers), cat("p_clean"), cat("p_corrupt"), cat("top").astype(np.int64),
        {l: torch.cat([p["all"][l] for p in parts]).float().cpu().numpy() for l in layers},
        cells, {l: downsample_mask(masks, cells[l].shape[-2:]) for l in cells},
        {l: sum(p["runs"].get(l, 0) for p in parts) for l in cells}, parts[0]["method"])


__all__ = ["trace", "trace_batch", "corrupt_images", "TraceResult", "TraceError", "ConvChain",
           "changed_cells", "CORRUPTIONS", "concept_images"]


def concept_images(probe, concept: str, limit: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(images01 N×3×H×W, masks N×H×W bool, probe rows) of probe images that show `concept`.

    The mask is the concept's pixel label, resized (nearest) from the label size to the image.
    """
    table = probe.concepts
    hit = table[table["name"].astype(str).str.lower() == concept.lower()]
    if hit.empty:
        names = ", ".join(sorted(table["name"].astype(str))[:40])
        raise TraceError(f"concept '{concept}' is not in the probe's concepts ({names}); "
                         "choose one of them")
    cid = int(hit["concept"].iloc[0])
    cat = str(hit["category"].iloc[0])
    imgs, masks, rows = [], [], []
    for i in range(len(probe)):
        item = probe[i]
        planes = item.pixel.get(cat)
        if planes is None:
            continue
        m = torch.from_numpy(np.asarray(planes) == cid).any(0)
        if not m.any():
            continue
        size = item.image.shape[-2:]
        m = F.interpolate(m[None, None].float(), size=size, mode="nearest")[0, 0] > 0
        imgs.append(item.image)
        masks.append(m)
        rows.append(i)
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise TraceError(f"no image of the probe shows '{concept}'; choose another concept or "
                         "a larger set")
    return torch.stack(imgs), torch.stack(masks), rows
