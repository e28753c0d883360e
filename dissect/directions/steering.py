"""Steering: add α·σ·direction to a layer's output at every position (ActAdd, RepE control, ITI).

    d = load_direction("dirs/sun")
    res = dose_response(lm, d, lset, alphas=[0, 1, 2, 4, 8], random=3)
    res.p_mean[:, lm.class_names.index("beach")]     # mean p(beach) per α
    res.random_p_mean                                 # the same for random directions of equal norm

The prefix up to the direction's layer runs once per batch (dissect.interventions.replay); each α re-runs only
what follows. `units` (ITI's top-K) confines the shift to those channels, renormalised so its
norm stays α·σ. Random controls are Gaussian directions over the same channels with the same norm.
"""
from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from dissect.directions.concept import Direction
from dissect.errors import DirectionError
from dissect.directions.pooled import check_channels


def parse_alphas(text: str | Sequence[float]) -> list[float]:
    """"0,1,2,4,8" -> [0.0, 1.0, 2.0, 4.0, 8.0]; DirectionError naming the bad entry."""
    if not isinstance(text, str):    # a list (argparse turns `--alpha=--` into [])
        text = ",".join(str(a) for a in text)
    out = []
    for tok in [t.strip() for t in text.split(",") if t.strip()]:
        try:
            v = float(tok)
        except ValueError:
            raise DirectionError(f"--alpha {text}: '{tok}' is not a number; give numbers "
                                 "separated by commas, e.g. --alpha 0,1,2,4,8") from None
        if not np.isfinite(v):
            raise DirectionError(f"--alpha {text}: '{tok}' is not a finite number")
        out.append(v)
    if not out:
        raise DirectionError("--alpha: give at least one number, e.g. --alpha 0,1,2,4,8")
    return out


def parse_top(text: str | None, d: Direction) -> list[int] | None:
    """"top:K" -> the K units whose single-unit AUROC is furthest from chance (ITI's ranking)."""
    if not text:
        return None
    m = re.fullmatch(r"top:(\d+)", text.strip())
    if not m or int(m.group(1)) < 1:
        raise DirectionError(f"--units {text}: write top:K with K a positive whole number, "
                             "e.g. --units top:16")
    k = int(m.group(1))
    n = d.vector.numel()
    if k > n:
        raise DirectionError(f"--units {text}: layer {d.layer} has only {n} units")
    score = (d.unit_auroc if d.unit_auroc is not None else d.vector.abs() + 0.5).float()
    return torch.argsort((score - 0.5).abs(), descending=True)[:k].sort().values.tolist()


def shift_vector(vector: torch.Tensor, units: Sequence[int] | None) -> torch.Tensor:
    """The unit-norm shift: `vector`, or its part on `units` renormalised."""
    v = vector.float().clone()
    if units is not None:
        mask = torch.zeros_like(v)
        mask[list(units)] = 1
        v = v * mask
    n = v.norm()
    if not n > 0:
        raise DirectionError("the chosen units carry none of the direction; pick more units")
    return v / n


def random_vectors(n: int, size: int, units: Sequence[int] | None, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed))
    return [shift_vector(torch.randn(size, generator=g), units) for _ in range(n)]


def add_edit(vector: torch.Tensor, amount: float):
    """An edit for hooks.intervene: out + amount·vector at every position (a new tensor)."""
    def edit(out: torch.Tensor) -> torch.Tensor:
        check_channels("steered layer", out)
        v = vector.to(out.device, out.dtype).view(1, -1, 1, 1)
        return out + amount * v
    return edit


@dataclass
class DoseResponse:
    alphas: list[float]
    class_names: list[str]
    p_mean: np.ndarray                       # [alphas, classes]
    random_p_mean: np.ndarray | None = None  # [alphas, classes], mean over random directions
    probs: np.ndarray | None = None          # [images, alphas, classes] (kept when asked)
    random_probs: np.ndarray | None = None
    n_random: int = 0
    units: list[int] | None = None
    meta: dict = field(default_factory=dict)

    def classes_json(self, p: np.ndarray) -> list[dict]:
        return [{"class": c, "p_mean": [round(float(v), 6) for v in p[:, j]]}
                for j, c in enumerate(self.class_names)]


@torch.no_grad()
def dose_response(lm, d: Direction, batches, alphas: Sequence[float],
                  units: Sequence[int] | None = None, random: int = 0, seed: int = 0,
                  keep_probs: bool = False) -> DoseResponse:
    """Mean class probabilities for each α over image batches (B×3×H×W in [0, 1])."""
    from dissect.interventions.replay import Replay
    alphas = [float(a) for a in alphas]
    v = shift_vector(d.vector, units)
    rand = random_vectors(random, v.numel(), units, seed) if random else []
    sums = None
    rsums = None
    kept, rkept = [], []
    n = 0
    for x01 in batches:
        x = lm.normalize(x01.to(lm.device))
        rp = Replay(lm.model, [d.layer])
        rp.record(x)
        per = torch.stack([_run(rp, lm.model, d.layer, v, a * d.sigma)
                           for a in alphas], 1)           # B×A×C
        sums = per.sum(0) if sums is None else sums + per.sum(0)
        if keep_probs:
            kept.append(per.numpy())
        if rand:
            rper = torch.stack([torch.stack([_run(rp, lm.model, d.layer, r, a * d.sigma)
                                             for a in alphas], 1) for r in rand]).mean(0)
            rsums = rper.sum(0) if rsums is None else rsums + rper.sum(0)
            if keep_probs:
                rkept.append(rper.numpy())
        n += x.shape[0]
    if not n:
        raise DirectionError("no images to steer; give --images FILE... or a non-empty --set")
    return DoseResponse(alphas, list(lm.class_names), (sums / n).numpy(),
                        None if rsums is None else (rsums / n).numpy(),
                        np.concatenate(kept) if kept else None,
                        np.concatenate(rkept) if rkept else None, len(rand),
                        None if units is None else list(units))


def _run(rp, model, layer, vector, amount) -> torch.Tensor:
    from dissect.models.hooks import intervene
    if amount == 0:
        return torch.softmax(rp.run().float(), 1).cpu()
    with intervene(model, {layer: add_edit(vector, amount)}):
        return torch.softmax(rp.run().float(), 1).cpu()


def steered_logits(lm, d: Direction, x01: torch.Tensor, alpha: float,
                   units: Sequence[int] | None = None) -> torch.Tensor:
    """Logits of images01 with α·σ·direction added at its layer (one full pass)."""
    from dissect.models.hooks import intervene
    v = shift_vector(d.vector, units)
    with torch.no_grad(), intervene(lm.model, {d.layer: add_edit(v, alpha * d.sigma)}):
        return lm.model(lm.normalize(x01.to(lm.device)))


class SteerIntervention:
    """A saved direction as one more intervention for the ablation lab's `ablate(...)` chain.

        iv = SteerIntervention(d, alpha=4)       # iv.layer, iv.apply(out), iv.describe()
    """

    def __init__(self, d: Direction, alpha: float, units: Sequence[int] | None = None):
        self.layer, self.d, self.alpha = d.layer, d, float(alpha)
        self.units = tuple(range(d.vector.numel())) if units is None else tuple(units)
        self._edit = add_edit(shift_vector(d.vector, units), self.alpha * d.sigma)

    def apply(self, out: torch.Tensor) -> torch.Tensor:
        return self._edit(out)

    def describe(self) -> str:
        return f"{self.d.layer} steered {self.alpha:+g}·σ along '{self.d.concept}' ({self.d.method})"


def saved_directions(runs_root) -> dict[str, Path]:
    """{name: folder} of the directions saved under `<runs_root>/directions/` (the app saves there)."""
    base = Path(runs_root) / "directions"
    if not base.is_dir():
        return {}
    return {p.name: p for p in sorted(base.iterdir()) if (p / "direction.json").is_file()}


def direction_intervention(folder, alpha: float, lm=None) -> SteerIntervention:
    """The ablation lab's hook: a saved direction as an intervention (checked against `lm`)."""
    from dissect.directions.concept import check_direction, load_direction
    d = load_direction(folder)
    if lm is not None:
        check_direction(d, lm)
    return SteerIntervention(d, alpha)
