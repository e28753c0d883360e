"""Feature visualisation cost, as a ratio to its floor: 256 forward+backward passes of a batch of
one image through the model up to the layer (what any gradient-ascent visualiser must run).

    python benchmarks/bench_visualize.py [--steps 256] [--threads N] [--device cpu|cuda] [--repeats 2]

1. ToyWorld CNN `conv6`, one unit, 112 px canvas;
2. resnet18 (random init: same cost as trained, offline) `layer4`, one unit, 128 px canvas.
For each: the plain visualisation (one start) / the floor, goal <= 1.5, and with the trust
checks the studio runs (two starts in one batch + the stability pass) / the floor. The seconds
printed are what a user waits for one unit on this machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch


def floor(lm, layer: str, size: int, steps: int) -> float:
    """Seconds for `steps` forward (to the layer) + backward passes of one image."""
    from dissect.visualize.objectives import grab, run_to
    x = torch.rand(1, 3, size + 12, size + 12, device=lm.device, requires_grad=True)
    for p in lm.model.parameters():
        p.requires_grad_(False)
    with grab(lm.model, layer) as box:
        def once():
            run_to(lm.model, lm.normalize(x))
            box.pop("act")[:, 0].mean().backward()
        once()
        _sync(lm)
        t = time.perf_counter()
        for _ in range(steps):
            once()
        _sync(lm)
        return time.perf_counter() - t


def _sync(lm) -> None:
    if str(lm.device).startswith("cuda"):
        torch.cuda.synchronize()


def timed_vis(lm, layer: str, size: int, steps: int, trust: bool) -> float:
    from dissect.visualize import Targets, VisConfig, draw
    cfg = VisConfig(steps=steps, size=size)
    t = time.perf_counter()
    draw(lm, layer, Targets.of_units([0]), cfg, None, trust=trust)
    _sync(lm)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from dissect.models.registry import load_model
    print(f"device {args.device}, {torch.get_num_threads()} threads, {args.steps} steps, one unit")
    for name, weights, layer, size in (("toyworld", "default", "conv6", 112),
                                       ("resnet18", "none", "layer4", 128)):
        lm = load_model(name, weights, device=args.device)
        timed_vis(lm, layer, size, 4, False)                   # warm up
        base, plain, full = [], [], []
        for _ in range(args.repeats):        # interleaved, the fastest of each: a shared
            base.append(floor(lm, layer, size, args.steps))     # machine's load varies
            plain.append(timed_vis(lm, layer, size, args.steps, False))
            full.append(timed_vis(lm, layer, size, args.steps, True))
        base, plain, full = min(base), min(plain), min(full)
        print(f"{name} {layer} {size}px: visualise / floor {plain / base:.2f}x (goal <= 1.5); "
              f"with trust checks {full / base:.2f}x; a user waits {plain:.1f} s "
              f"({full:.1f} s with trust); floor {base:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
