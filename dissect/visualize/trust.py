"""How far to trust a visualisation: reach, stability across starts, and the path it takes.

    reach = activation / best_natural          # imgmax.npy's max over the probe for that unit
    s = stability(lm, "conv6", vis.images, vis.second, run.imgmax("conv6"))   # K in [-1, 1]
    layers = earlier_layers(lm, "conv6", 112)                   # conv2, conv4, conv5
    p = path_check(lm, layers, "conv6", targets, vis.images, tops, others)  # K values
    words(reach, s, p)   # "reaches 3.1× the best natural image; stable across starts; takes a
                         #  path unlike natural images — read with care"

- stability: Pearson correlation over the layer's units between the two starts' responses
  (each unit's max over positions, z-scored by the run's imgmax.npy when there is one); 1 =
  the same units fire, ~0 = unrelated. Measured on ToyWorld conv6 (128 steps, z-scored): two
  starts of one unit 0.85-0.97, images of two different units 0.42 on average; "stable" is
  ≥ 0.7.
- path check (Geirhos et al., ICML 2024, "Don't trust your eyes"): at up to three earlier
  layers on the main path, whether the visualisation's response where the unit fires points
  where the unit's top natural images' does (z-scored by other natural images; see
  `path_check`), relative to the
  top images themselves: ~1 = their route, ~0 = an ordinary image's, < 0 = away from it. On
  ToyWorld conv6 (toyworld:200 run, 256 steps): car unit 89 0.95, fence unit 30 0.87, sun
  unit 3 0.07 (its picture tiles suns on a texture no scene has). "like natural images" is
  ≥ 0.5.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dissect.models.hooks import capture, get_layer
from dissect.visualize.objectives import Targets, channels_last, grab, run_to

STABLE, PATH_LIKE = 0.7, 0.5


def stability(lm, layer: str, a: torch.Tensor, b: torch.Tensor,
              natural: np.ndarray | None = None) -> np.ndarray:
    """K correlations (Pearson, over the layer's units) between two starts' responses: each
    unit's max over positions, z-scored by `natural` (imgmax.npy [images, units]) when given."""
    with torch.no_grad(), grab(lm.model, layer) as box:
        run_to(lm.model, lm.normalize(torch.cat([a, b]).to(lm.device)))
    f = channels_last(box["act"]).float().amax(1).cpu().numpy().astype(np.float64)
    if natural is not None and natural.shape[1] == f.shape[1]:
        f = (f - natural.mean(0)) / (natural.std(0) + 1e-6)
    k = len(a)
    out = []
    for i in range(k):
        p, q = f[i] - f[i].mean(), f[k + i] - f[k + i].mean()
        den = np.linalg.norm(p) * np.linalg.norm(q)
        out.append(float(p @ q / den) if den > 0 else float("nan"))
    return np.asarray(out)


def earlier_layers(lm, layer: str, size: int, most: int = 3) -> list[str]:
    """Up to `most` spatial layers on the main path before `layer` (siblings of the layer or of
    one of its ancestors: `conv1`..`conv5` for `conv6`), evenly spaced, the nearest last."""
    get_layer(lm.model, layer)
    parts = layer.split(".")
    parents = {".".join(parts[:i]) for i in range(len(parts))}      # "" = the root
    names = [n for n, _ in lm.model.named_modules()
             if n and n != layer and n.rpartition(".")[0] in parents and n not in parents]
    order: list[str] = []
    shapes: dict[str, tuple] = {}
    handles = []
    for name in names:
        def hook(_m, _i, out, name=name):
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(t.shape)
                order.append(name)
        handles.append(get_layer(lm.model, name).register_forward_hook(hook))
    done: dict = {}

    def mark(_m, _i, _o) -> None:          # a hook that returned a value would replace the output
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


def where_it_fires(lm, layers: list[str], target_layer: str, targets: Targets,
                   images01: torch.Tensor, batch: int = 16) -> dict[str, torch.Tensor]:
    """{layer: B×C}: each earlier layer's response pooled where the target fires (weights =
    the target's rectified map at `target_layer`, resized to that layer's grid; uniform when
    it is zero everywhere or not a square grid). Image i is weighed by target i's map."""
    out: dict[str, list[torch.Tensor]] = {l: [] for l in layers}
    with torch.no_grad():
        for i in range(0, len(images01), batch):
            x = images01[i:i + batch].to(lm.device)
            sub = Targets(targets.names[i:i + batch],
                          targets.units[i:i + batch] if targets.units is not None else None,
                          targets.vectors[i:i + batch] if targets.vectors is not None else None)
            with capture(lm.model, layers + [target_layer]) as acts:
                lm.model(lm.normalize(x))
            m = F.relu(sub.maps(acts[target_layer]))                    # B×P
            t = acts[target_layer]
            h, w = (t.shape[-2], t.shape[-1]) if t.dim() == 4 else (0, 0)
            if not h and int(m.shape[1] ** 0.5) ** 2 == m.shape[1]:
                h = w = int(m.shape[1] ** 0.5)
            for l in layers:
                a = acts[l].float()                                      # B×C×h×w
                if h:
                    wts = F.interpolate(m.view(-1, 1, h, w), size=a.shape[-2:], mode="bilinear",
                                        align_corners=False).flatten(1)
                else:
                    wts = torch.ones(a.shape[0], a.shape[-2] * a.shape[-1], device=a.device)
                wts = torch.where(wts.sum(1, keepdim=True) > 0, wts, torch.ones_like(wts))
                wts = wts / wts.sum(1, keepdim=True)
                out[l].append(torch.einsum("bcp,bp->bc", a.flatten(2), wts).cpu())
    return {l: torch.cat(v) for l, v in out.items()}


def path_check(lm, layers: list[str], target_layer: str, targets: Targets, vis: torch.Tensor,
               tops: list[torch.Tensor], others: list[torch.Tensor]) -> np.ndarray:
    """K scores: image k (drawn for target k) against target k's top natural images `tops[k]`
    (N×3×H×W) and other natural images `others[k]` (M×3×H×W). Each earlier layer's response
    is pooled where the target fires (`where_it_fires`), z-scored by the other images' mean
    and std per unit, and compared (cosine) with the top images' mean; the score is the median
    over layers of cos(vis) / mean cos(top images): about 1 = the top images' route, about 0 =
    an ordinary image's, below 0 = away from it."""
    if not layers:
        return np.full(len(vis), np.nan)
    fv = where_it_fires(lm, layers, target_layer, targets, vis)
    scores = []
    for k in range(len(vis)):
        ft = where_it_fires(lm, layers, target_layer, targets.pick(k, len(tops[k])), tops[k])
        fo = where_it_fires(lm, layers, target_layer, targets.pick(k, len(others[k])), others[k])
        per_layer = []
        for l in layers:
            mo, so = fo[l].mean(0), fo[l].std(0) + 1e-6
            aim = ((ft[l] - mo) / so).mean(0, keepdim=True)
            cos = lambda f: F.cosine_similarity((f - mo) / so, aim, dim=1)  # noqa: E731
            ref = float(cos(ft[l]).mean())
            per_layer.append(float(cos(fv[l][k:k + 1])[0]) / ref if ref > 1e-6 else np.nan)
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
