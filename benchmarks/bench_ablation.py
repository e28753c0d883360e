"""Ablation speed, as ratios to a plain forward pass (resnet18, random init, 224 px, CPU).

    python benchmarks/bench_ablation.py [--images 500] [--threads N]

1. single image: a new intervention on layer4 of an image already seen (only the suffix re-runs)
   / one plain forward of that image.                                        goal <= 1.2
2. unit importance: rank all 512 units of layer4 over N images (each removed alone; activations
   cached once) / one plain forward pass over the same N images.             goal <= 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from dissect.interventions.ablation import ImageAblation, Intervention
    from dissect.interventions.importance import rank_units
    from dissect.interventions.labelled import LabelledSet
    from dissect.models.registry import load_model

    lm = load_model("resnet18", "none", seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 224, 224, generator=g)
    plain = _median_time(lambda: lm.model(lm.normalize(x[None])), 7)
    for layer in ("layer4", "layer3", "layer2", "layer1"):
        lab = ImageAblation(lm)
        lab.compare(x, [Intervention(layer, (0,))])          # first sight of the image: records
        k = lm.model.get_submodule(layer)[-1].conv2.out_channels
        units = iter(range(1, 10_000))
        edit = _median_time(lambda: lab.compare(x, [Intervention(layer, (next(units) % k,))]), 9)
        goal = "  (goal <= 1.2)" if layer == "layer4" else ""
        print(f"single image, new intervention on {layer} / plain forward: {edit / plain:.3f}"
              f"{goal}; {edit * 1e3:.1f} ms vs {plain * 1e3:.1f} ms")

    n = args.images
    pixels = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)
    labels = np.arange(n) % 10
    lset = LabelledSet("bench", list(lm.class_names), labels, [str(i) for i in range(n)],
                       lambda i: pixels[i].float() / 255)

    def forward_pass():
        for _idx, xb in lset.batches(args.batch_size):
            lm.model(lm.normalize(xb))

    t = time.perf_counter()
    forward_pass()
    base = time.perf_counter() - t
    t = time.perf_counter()
    imp = rank_units(lm, lset, "layer4", batch_size=args.batch_size)
    rank = time.perf_counter() - t
    print(f"unit importance, all 512 units of layer4 over {n} images / plain forward pass: "
          f"{rank / base:.3f}  (goal <= 5; {rank:.1f} s vs {base:.1f} s; "
          f"{'closed form' if imp.fast else 're-run per unit'})")
    t = time.perf_counter()
    rank_units(lm, lset, "layer4", batch_size=args.batch_size, force_generic=True)
    generic = time.perf_counter() - t
    print(f"  same ranking without the closed form (suffix re-run per unit): {generic / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
