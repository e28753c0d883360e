"""Interventions on units, and their effect on one image.

    iv = Intervention("layer4", (3, 17), mode="zero")        # or "mean" (with means=), "value", "scale"
    with ablate(lm.model, [iv]):                             # hooks removed on exit, even on error
        logits = lm.model(lm.normalize(x))
    lab = ImageAblation(lm)
    res = lab.compare(x01, [iv])          # top-5 before/after + every class whose probability moves
    res = lab.compare(x01, [iv2])         # same image: only the layers after the edit are re-run

Modes: zero, mean (the unit's mean over a probe set: `means_from_run` / `unit_means`),
value=X (a constant), scale=X (multiply). Several units and layers at once.
Labelled sets: dissect.interventions.labelled; unit importance: dissect.interventions.importance.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from dissect.errors import AblationError
from dissect.models.hooks import get_layer, intervene
from dissect.models.registry import LoadedModel, layer_info
from dissect.interventions.replay import Replay

MODES = ("zero", "mean", "value", "scale")
MAX_SIDE = 4096                 # photos are shrunk to this before preprocessing


@dataclass(eq=False)
class Intervention:
    """Set `units` of `layer`'s output: zero, their `means`, a constant `value`, or scale by `value`."""
    layer: str
    units: tuple[int, ...]
    mode: str = "zero"
    value: float = 0.0
    means: torch.Tensor | None = None     # [K] per-unit means, for mode "mean"

    def __post_init__(self):
        self.units = tuple(int(u) for u in self.units)
        if self.mode not in MODES:
            raise AblationError(f"unknown mode '{self.mode}': use zero, mean, value=X or scale=X")
        if self.mode == "mean" and self.means is None:
            raise AblationError("mode 'mean' needs the units' means: pass --run RUN (with acts.npy) "
                                "or a probe set to compute them over")

    def apply(self, out: torch.Tensor) -> torch.Tensor:
        """A new tensor equal to `out` with this intervention's units set (never in place)."""
        k = out.shape[1]
        bad = [u for u in self.units if not 0 <= u < k]
        if bad:
            raise AblationError(f"unit {bad[0]} is out of range for layer '{self.layer}': it has "
                                f"{k} units, numbered 0-{k - 1}")
        new = out.clone()
        if not self.units:
            return new
        idx = torch.as_tensor(self.units, dtype=torch.long, device=out.device)
        shape = (1, len(self.units)) + (1,) * (out.dim() - 2)
        if self.mode == "zero":
            new[:, idx] = 0
        elif self.mode == "value":
            new[:, idx] = self.value
        elif self.mode == "scale":
            new[:, idx] = out[:, idx] * self.value
        else:
            means = self.means.to(out.device, out.dtype)
            if means.numel() != k:
                raise AblationError(f"{means.numel()} unit means given for layer '{self.layer}' "
                                    f"with {k} units")
            new[:, idx] = means[idx].view(shape).expand_as(new[:, idx])
        return new

    def describe(self) -> str:
        how = {"zero": "zeroed", "mean": "set to their mean", "value": f"set to {self.value:g}",
               "scale": f"scaled by {self.value:g}"}[self.mode]
        return f"{self.layer}: {len(self.units)} unit(s) {how}"


def parse_mode(text: str) -> tuple[str, float]:
    """"zero" | "mean" | "value=X" | "scale=X" -> (mode, value)."""
    mode, _, num = text.strip().partition("=")
    mode = mode.lower()
    if mode in ("zero", "mean") and not num:
        return mode, 0.0
    if mode in ("value", "scale") and num:
        try:
            return mode, float(num)
        except ValueError:
            pass
    raise AblationError(f"bad --mode '{text}': use zero, mean, value=X or scale=X (X a number)")


MAX_UNITS = 1 << 20     # no layer has this many channels: a longer list is a typo or an attack


def parse_units(text: str, num_units: int | None = None) -> list[int]:
    """"3,17,40-43" -> [3, 17, 40, 41, 42, 43]; each below `num_units` when given (else below
    MAX_UNITS), so a link's "0-999999999" is refused instead of filling the memory."""
    top = MAX_UNITS if num_units is None else int(num_units)
    units: list[int] = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        lo, dash, hi = part.partition("-")
        try:
            a, b = (int(lo), int(hi)) if dash and lo else (int(part), int(part))
        except ValueError:
            raise AblationError(f"bad unit list '{text[:80]}': use numbers like 3,17,40-43") \
                from None
        if not 0 <= a <= b < top:
            raise AblationError(
                f"units '{part[:40]}' are out of range: " + (
                    f"the layer has {top} units, numbered 0-{top - 1}" if num_units is not None
                    else "use unit numbers from 0, low-high with low <= high"))
        units.extend(range(a, b + 1))
        if len(units) > top:
            raise AblationError(f"unit list '{text[:80]}' names more units than the layer has")
    if not units:
        raise AblationError("no units given: use --units 3,17 or --concept NAME --run RUN")
    return units


def format_units(units: Iterable[int]) -> str:
    """[3, 17, 40, 41, 42, 43] -> "3,17,40-43" (parse_units reads it back)."""
    out, run = [], []
    for u in sorted({int(u) for u in units}):
        if run and u == run[-1] + 1:
            run.append(u)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [u]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def invert(iv: Intervention, num_units: int) -> Intervention:
    """The same intervention on every other unit of the layer."""
    chosen = set(iv.units)
    rest = tuple(u for u in range(num_units) if u not in chosen)
    return Intervention(iv.layer, rest, iv.mode, iv.value, iv.means)


def check_units(lm: LoadedModel, layer: str, units: Iterable[int]) -> int:
    """The layer's unit count; LayerNotFound / AblationError for a bad layer or unit."""
    k = layer_info(lm, layer).shape[0]
    bad = [u for u in units if not 0 <= int(u) < k]
    if bad:
        raise AblationError(f"unit {bad[0]} is out of range for layer '{layer}': it has {k} units, "
                            f"numbered 0-{k - 1}")
    return k


def edits_for(interventions: Sequence[Intervention]) -> dict:
    """{layer: edit} combining every intervention on the same layer, in order."""
    by_layer: dict[str, list[Intervention]] = {}
    for iv in interventions:
        by_layer.setdefault(iv.layer, []).append(iv)

    def chain(ivs: list[Intervention]):
        def edit(out: torch.Tensor) -> torch.Tensor:
            for iv in ivs:
                out = iv.apply(out)
            return out
        return edit

    return {layer: chain(ivs) for layer, ivs in by_layer.items()}


@contextmanager
def ablate(model: nn.Module, interventions: Sequence[Intervention]) -> Iterator[None]:
    """Apply `interventions` to `model` inside the block; every hook is removed on exit."""
    with intervene(model, edits_for(interventions)):
        yield


# ---- unit means ----------------------------------------------------------------------------

def means_from_acts(acts: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """Per-unit mean of an [images, units, h, w] array (memmap-friendly, chunked)."""
    total = np.zeros(acts.shape[1], dtype=np.float64)
    for i in range(0, acts.shape[0], chunk):
        total += np.asarray(acts[i:i + chunk], dtype=np.float32).sum(axis=(0, 2, 3), dtype=np.float64)
    return torch.from_numpy(total / (acts.shape[0] * acts.shape[2] * acts.shape[3])).float()


def means_from_run(run, layer: str) -> torch.Tensor | None:
    """Unit means over a run's probe set from its acts.npy (None when the run kept none)."""
    acts = run.acts(layer)
    return None if acts is None else means_from_acts(acts)


@torch.no_grad()
def unit_means(lm: LoadedModel, layer: str, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per-unit mean of `layer`'s output over images01 batches (B×3×H×W in [0, 1])."""
    from dissect.models.hooks import capture, stopped_forward
    total, count = None, 0
    for x in batches:
        with capture(lm.model, [layer], stop_after=True) as acts:
            stopped_forward(lm.model, lm.normalize(x.to(lm.device)))
        a = acts[layer].float()
        dims = [0] + list(range(2, a.dim()))
        s = a.sum(dim=dims).double()
        total = s if total is None else total + s
        count += a.numel() // a.shape[1]
    if total is None:
        raise AblationError("no images to compute unit means over")
    return (total / count).float().cpu()


# ---- images --------------------------------------------------------------------------------

def open_image(source, name: str | None = None, max_pixels: int | None = None):
    """A PIL RGB image from a path or file-like; huge images are refused before decoding (a
    per-call limit; PIL's global guard is left alone), 16-bit/float ones scaled, not clipped."""
    from PIL import UnidentifiedImageError

    from dissect.probes.images import MAX_PIXELS, ImageTooLarge, open_limited, to_rgb
    label = name or (os.path.basename(source) if isinstance(source, (str, os.PathLike))
                     else "upload")
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        raise AblationError(f"image '{label}' does not exist")
    try:
        img = open_limited(source, max_pixels=max_pixels or MAX_PIXELS, label=label)
        img.draft("RGB", (MAX_SIDE, MAX_SIDE))      # JPEG: decode at a reduced scale
        img = to_rgb(img)
        img.thumbnail((MAX_SIDE, MAX_SIDE))
        return img
    except ImageTooLarge as e:
        raise AblationError(str(e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise AblationError(f"'{label}' is not an image that can be read "
                            f"({type(e).__name__}); use a PNG or JPEG file") from None


def image_tensor(lm: LoadedModel, source, name: str | None = None) -> torch.Tensor:
    """A photo (path, file or PIL image) as the model sees it: 3×S×S in [0, 1]."""
    img = source if hasattr(source, "convert") else open_image(source, name)
    return lm.prepare(img)


# ---- one image -----------------------------------------------------------------------------

@dataclass
class ImageResult:
    path: str
    before: list[tuple[str, float]]                   # top-k (class, probability)
    after: list[tuple[str, float]]
    changes: list[dict] = field(default_factory=list)  # {"class", "before", "after", "delta"}
    probs_before: np.ndarray | None = None
    probs_after: np.ndarray | None = None

    def to_json(self) -> dict:
        return {"path": self.path,
                "before": [{"class": c, "p": round(p, 6)} for c, p in self.before],
                "after": [{"class": c, "p": round(p, 6)} for c, p in self.after],
                "changes": self.changes}


def top_classes(probs: torch.Tensor, names: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    v, i = probs.topk(min(k, probs.numel()))
    return [(names[j] if j < len(names) else f"class {j}", float(p)) for p, j in zip(v, i.tolist())]


def class_changes(before: torch.Tensor, after: torch.Tensor, names: Sequence[str],
                  min_delta: float = 1e-4) -> list[dict]:
    """Every class whose probability moved by at least `min_delta`, largest move first."""
    delta = after - before
    moved = torch.nonzero(delta.abs() >= min_delta).flatten()
    order = moved[delta[moved].abs().argsort(descending=True)]
    return [{"class": names[j] if j < len(names) else f"class {j}", "before": float(before[j]),
             "after": float(after[j]), "delta": float(delta[j])} for j in order.tolist()]


def moved_most(changes: Sequence[dict], n: int = 12) -> list[dict]:
    """The `n` class changes with the largest |delta|, ordered by delta (gains first): the rows
    of a diverging bar chart."""
    top = sorted(changes, key=lambda c: -abs(c["delta"]))[:n]
    return sorted(top, key=lambda c: -c["delta"])


class ImageAblation:
    """Before/after predictions for one image; a new intervention re-runs only the layers after it.

        lab = ImageAblation(lm)
        lab.compare(x01, [Intervention("layer4", (3,))], path="cat.jpg")
    """

    def __init__(self, lm: LoadedModel, topk: int = 5):
        self.lm, self.topk = lm, topk
        self._key = None
        self._replay: Replay | None = None

    def _prepare(self, x01: torch.Tensor, layers: tuple[str, ...]) -> torch.Tensor:
        key = (layers, tuple(x01.shape), float(x01.sum()), float(x01[..., ::5, ::3].sum()))
        if key != self._key or self._replay is None:
            for layer in layers:
                get_layer(self.lm.model, layer)
            x = self.lm.normalize(x01.unsqueeze(0).to(self.lm.device))
            if layers:
                self._replay = Replay(self.lm.model, list(layers))
                self._before = self._replay.record(x)[0]
            else:
                self._replay = None
                with torch.no_grad():
                    self._before = self.lm.model(x)[0]
            self._key = key
        return self._before

    @torch.no_grad()
    def logits(self, x01: torch.Tensor, interventions: Sequence[Intervention]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits before, logits after) for one image 3×H×W in [0, 1]."""
        layers = tuple(sorted({iv.layer for iv in interventions}))
        before = self._prepare(x01, layers)
        if not interventions:
            return before, before
        with ablate(self.lm.model, interventions):
            after = self._replay.run()[0]
        return before, after

    def compare(self, x01: torch.Tensor, interventions: Sequence[Intervention], path: str = "",
                min_delta: float = 1e-4) -> ImageResult:
        """Top-k before/after and the probability change of every class that moves."""
        before, after = self.logits(x01, interventions)
        pb, pa = before.float().softmax(0).cpu(), after.float().softmax(0).cpu()
        names = self.lm.class_names
        return ImageResult(path, top_classes(pb, names, self.topk), top_classes(pa, names, self.topk),
                           class_changes(pb, pa, names, min_delta), pb.numpy(), pa.numpy())
