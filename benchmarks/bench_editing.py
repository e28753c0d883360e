"""Causal tracing and rewriting speed, as ratios to a plain forward pass (ToyWorld CNN, CPU).

    python benchmarks/bench_editing.py [--images 100] [--moment-images 1000] [--threads N]

1. tracing: 6 layers (conv1..conv6) × every cell, the sun corrupted, on N images showing the
   sun / one plain forward pass over the same N images.                        goal <= 30
2. one rewrite of conv6 (3 exemplars), including the second-moment pass over M images (not
   cached) / one plain forward pass over the same M images.                   goal <= 10
Images are rendered before the clocks start (rendering is not the method being timed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--moment-images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from dissect.editing.rewrite import edit_target, keys_values, rank_one_update, second_moment
    from dissect.editing.evaluation import exemplars
    from dissect.toyworld.generate import render
    from dissect.toyworld.model import load_toyworld
    from dissect.toyworld.world import OBJECTS
    from dissect.editing.tracing import trace

    lm = load_toyworld()
    sun = OBJECTS.index("sun") + 1
    imgs, masks, i = [], [], 0
    while len(imgs) < args.images:
        s = render(1000, i)
        i += 1
        if (s.obj == sun).any():
            imgs.append(torch.from_numpy(s.rgb).permute(2, 0, 1).float() / 255)
            masks.append(torch.from_numpy(s.obj == sun))
    x, m = torch.stack(imgs), torch.stack(masks)

    def forward(batch, bs=25):
        for s in range(0, len(batch), bs):
            lm.model(lm.normalize(batch[s:s + bs]))
    forward(x[:25])                                            # warm up
    t = time.perf_counter()
    forward(x)
    base = time.perf_counter() - t
    layers = [f"conv{k}" for k in range(1, 7)]
    t = time.perf_counter()
    res = trace(lm, x, m, layers, seed=0)
    tr = time.perf_counter() - t
    cells = sum(res.cells[l].shape[1] * res.cells[l].shape[2] for l in layers)
    run = sum(res.runs.values())
    print(f"tracing 6 layers x all {cells} cells on {len(x)} images / plain forward: "
          f"{tr / base:.1f}  (goal <= 30; {tr:.1f} s vs {base:.2f} s; {run} changed cells run "
          f"by the {res.method}, the other {len(x) * cells - run} cells are exactly 0)")

    n = args.moment_images
    pics = torch.from_numpy(np.stack([render(0, k).rgb for k in range(n)])).permute(0, 3, 1, 2)
    ex = exemplars("sea", "snow", 3, seed=7)

    def fwd_all(bs=50):
        for s in range(0, n, bs):
            lm.model(lm.normalize(pics[s:s + bs].float() / 255))
    t = time.perf_counter()
    fwd_all()
    base = time.perf_counter() - t
    t = time.perf_counter()
    target = edit_target(lm.model, "conv6")
    mom = second_moment(lm, target, (pics[s:s + 50].float() / 255 for s in range(0, n, 50)))
    k, v = keys_values(lm, target, ex.styled["snow"], ex.clean, ex.masks)
    rank_one_update(target.flat_weight(), k, v, mom.matrix())
    rw = time.perf_counter() - t
    print(f"one rewrite of conv6 incl. the second moment over {n} images / plain forward: "
          f"{rw / base:.2f}  (goal <= 10; {rw:.1f} s vs {base:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
