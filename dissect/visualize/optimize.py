"""The optimisation loop: K targets drawn as one batch of K images (times `starts`).

    vis = optimise(lm, "conv6", Targets.of_units([3, 9]), VisConfig(steps=256, size=112))
    vis.images[0]        # float 3×S×S in [0, 1] (grey for a flat target)
    vis.activation[0]    # the unit's max over positions on the final image (imgmax's statistic)
    vis.flat[0]          # True: the optimisation could not raise the objective at all
    vis = optimise(..., starts=2)     # two independent starts per target in the same batch
    vis.second[0]                     # the second start's image (for the stability check)

`progress(done, total, text)` is called after every step; it may raise to stop the work
(studio.background.Job.step raises Cancelled). Each image is scored on its own target only, and
the model is in eval mode, so the K images do not interact: one batch costs one forward and one
backward pass per step however many targets it holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dissect.visualize.config import VisConfig
from dissect.visualize.objectives import Targets, grab, run_to
from dissect.visualize.params import make_image
from dissect.visualize.transforms import StandardTransforms

Progress = Callable[[int, int, str], None]


@dataclass
class Visualisation:
    names: list[str]
    images: torch.Tensor          # K×3×S×S in [0, 1], first start
    activation: torch.Tensor      # K: max over positions on the final image
    objective_start: torch.Tensor  # K: objective on the first image
    objective_end: torch.Tensor   # K: on the final image
    flat: torch.Tensor            # K bool
    second: torch.Tensor | None = None     # K×3×S×S: the second start (starts=2)
    second_activation: torch.Tensor | None = None
    config: VisConfig | None = None


def _measure(lm, layer: str, targets: Targets, images01: torch.Tensor):
    with torch.no_grad(), grab(lm.model, layer) as box:
        run_to(lm.model, lm.normalize(images01))
    return targets.objective(box["act"]).cpu(), targets.statistic(box["act"]).cpu()


def optimise(lm, layer: str, targets: Targets, cfg: VisConfig, *, starts: int = 1,
             progress: Progress | None = None) -> Visualisation:
    """Draw one image per target (per start) by gradient ascent on its objective."""
    k = len(targets)
    all_targets = targets.repeat(starts) if starts > 1 else targets
    device = lm.device
    image = make_image(k * starts, cfg, device)
    warp = StandardTransforms(cfg, torch.Generator().manual_seed(cfg.seed + 1))
    opt_cls = torch.optim.NAdam if cfg.method == "maco" else torch.optim.Adam
    opt = opt_cls(image.parameters(), lr=cfg.lr)
    grads = [p.requires_grad for p in lm.model.parameters()]
    for p in lm.model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            obj0, _ = _measure(lm, layer, all_targets, image())
        with grab(lm.model, layer) as box:
            for step in range(cfg.steps):
                opt.zero_grad(set_to_none=True)
                run_to(lm.model, lm.normalize(warp(image())))
                score = all_targets.objective(box.pop("act"))
                (-score.sum()).backward()
                opt.step()
                if progress is not None:
                    progress(step + 1, cfg.steps, f"step {step + 1} of {cfg.steps}")
        with torch.no_grad():
            final = image().detach()
            obj1, stat = _measure(lm, layer, all_targets, final)
    finally:
        for p, g in zip(lm.model.parameters(), grads):
            p.requires_grad_(g)
    gain = obj1 - obj0
    flat = gain <= cfg.flat_tol * torch.maximum(obj0.abs(), obj1.abs())
    final = final.cpu()
    final[flat] = 0.5                       # say "flat", never draw the noise it started from
    vis = Visualisation(targets.names, final[:k], stat[:k], obj0[:k], obj1[:k], flat[:k],
                        config=cfg)
    if starts > 1:
        vis.second, vis.second_activation = final[k:2 * k], stat[k:2 * k]
        vis.flat = flat[:k] | flat[k:2 * k]
    return vis
