"""How far to trust a visualisation: reach, stability across starts, and the path it takes.

    reach = activation / best_natural          # imgmax.npy's max over the probe for that unit
    s = stability(lm, "conv6", vis.images, vis.second)          # K values in [-1, 1]
    p = path_check(lm, "conv6", vis.images, natural_top, natural_other)   # K values
    words(reach, s, p)   # "reaches 3.1× the best natural image; stable across starts; takes a
                         #  path unlike natural images — read with care"

- stability: cosine between the two starts' layer responses (mean over positions), each taken
  relative to the response to a plain grey canvas; 1 = the same features, ~0 = unrelated.
- path check (Geirhos et al., ICML 2024, "Don't trust your eyes"): at up to three earlier
  spatial layers, how close the visualisation's response (mean over positions) is to the mean
  response of the unit's top natural images, scaled so 0 = as close as other natural images,
  1 = as close as the top images are to each other; the median over the layers. A
  visualisation that excites the unit by a route natural images do not take scores near or
  below 0.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dissect.hooks import capture, get_layer
from dissect.visualize.objectives import channels_last

STABLE, PATH_LIKE = 0.5, 0.5


def pooled(lm, layers: list[str], images01: torch.Tensor, batch: int = 16) -> dict[str, torch.Tensor]:
    """{layer: B×C} mean over positions of each layer's response to `images01`."""
    out: dict[str, list[torch.Tensor]] = {l: [] for l in layers}
    with torch.no_grad():
        for i in range(0, len(images01), batch):
            x = images01[i:i + batch].to(lm.device)
            with capture(lm.model, layers) as acts:
                lm.model(lm.normalize(x))
            for l in layers:
                out[l].append(channels_last(acts[l]).float().mean(1).cpu())
    return {l: torch.cat(v) for l, v in out.items()}


def stability(lm, layer: str, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """K cosines between two starts' responses at `layer`, relative to a grey canvas."""
    grey = torch.full_like(a[:1], 0.5)
    f = pooled(lm, [layer], torch.cat([a, b, grey]))[layer]
    k = len(a)
    ref = f[-1:]
    return F.cosine_similarity(f[:k] - ref, f[k:2 * k] - ref, dim=1).numpy()


def earlier_layers(lm, layer: str, size: int, most: int = 3) -> list[str]:
    """Up to `most` spatial layers that finish before `layer` (evenly spaced, nearest last)."""
    get_layer(lm.model, layer)
    order: list[str] = []
    handles = []
    shapes: dict[str, tuple] = {}
    for name, m in lm.model.named_modules():
        if not name or name == layer or name.startswith(layer + ".") or layer.startswith(name + "."):
            continue

        def hook(_m, _i, out, name=name):
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(t.shape)
                order.append(name)
        handles.append(m.register_forward_hook(hook))

    done = {}

    def mark(_m, _i, _o):
        done.setdefault("at", len(order))
    handles.append(get_layer(lm.model, layer).register_forward_hook(mark))
    try:
        with torch.no_grad():
            lm.model(torch.zeros(1, 3, size, size, device=lm.device))
    finally:
        for h in handles:
            h.remove()
    before = order[:done.get("at", 0)]
    spatial = [n for n in before if len(shapes[n]) == 4 and shapes[n][2] * shapes[n][3] > 1]
    if len(spatial) <= most:
        return spatial
    picks = np.linspace(0, len(spatial) - 1, most + 1)[1:].round().astype(int)
    return [spatial[i] for i in sorted(set(picks))]


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return F.cosine_similarity(a, b, dim=-1)


def path_check(lm, layers: list[str], vis: torch.Tensor, tops: list[torch.Tensor],
               others: list[torch.Tensor]) -> np.ndarray:
    """K scores: image k against its top natural images `tops[k]` (N×3×H×W) and other natural
    images `others[k]`; median over `layers` of (s_vis − s_other) / (s_top − s_other)."""
    if not layers:
        return np.full(len(vis), np.nan)
    fv = pooled(lm, layers, vis)
    scores = []
    for k in range(len(vis)):
        ft, fo = pooled(lm, layers, tops[k]), pooled(lm, layers, others[k])
        per_layer = []
        for l in layers:
            t = ft[l]
            mean_top = t.mean(0)
            s_vis = float(_corr(fv[l][k], mean_top))
            s_other = float(_corr(fo[l], mean_top[None]).mean())
            if len(t) > 1:   # each top image against the mean of the others
                loo = (t.sum(0, keepdim=True) - t) / (len(t) - 1)
                s_top = float(_corr(t, loo).mean())
            else:
                s_top = 1.0
            span = s_top - s_other
            per_layer.append((s_vis - s_other) / span if abs(span) > 1e-6 else np.nan)
        scores.append(float(np.nanmedian(per_layer)) if np.isfinite(per_layer).any() else np.nan)
    return np.asarray(scores)


def words(reach: float | None, stable: float | None, path: float | None, flat: bool = False) -> str:
    """The trust figures in one sentence, as the unit page states them."""
    if flat:
        return "flat: the optimisation could not raise this unit at all (dead or constant)"
    parts = []
    if reach is not None and np.isfinite(reach):
        parts.append(f"reaches {reach:.2g}× the best natural image" if reach >= 1 else
                     f"reaches only {reach:.2f}× the best natural image")
    if stable is not None and np.isfinite(stable):
        parts.append("stable across seeds" if stable >= STABLE else
                     f"unstable across seeds (similarity {stable:.2f})")
    if path is not None and np.isfinite(path):
        parts.append("takes a path like natural images" if path >= PATH_LIKE else
                     "takes a path unlike natural images — read with care")
    return "; ".join(parts) or "no trust figures (no run to compare with)"
