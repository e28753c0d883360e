"""Directions, steering and readout speed, as ratios to a plain forward pass (ToyWorld CNN, CPU).

    python benchmarks/bench_directions.py [--images 500] [--threads N]

1. direction: the sun direction at conv6 from N probe images (decode images + the sun's masks,
   forward up to conv6, fit) / decode the same images + a plain forward.        goal <= 1.5
2. dose-response: 5 α on N images (the prefix runs once per batch, each α re-runs the suffix)
   / a plain forward over the same images (in memory).                          goal <= 5
3. readout: 6 layers' pooled features + a linear head each, no feature cache
   / a plain forward over the same images (in memory).                          goal <= 2
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=50)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from dissect.directions.concept import contrast_from_probe, fit
    from dissect.interventions.labelled import open_labelled_set
    from dissect.models.registry import load_model
    from dissect.probes.registry import open_probe
    from dissect.probes.types import probe_loader
    from dissect.directions.readout import readout
    from dissect.directions.steering import dose_response

    lm = load_model("toyworld", "default")
    probe = open_probe(f"toyworld:{args.images}", seed=0)
    bs = args.batch_size
    images_only = copy.copy(probe)
    images_only.decode_labels = False

    def plain_decoded():
        with torch.no_grad():
            for b in probe_loader(images_only, bs, workers=0):
                lm.model(lm.normalize(b.images))

    def direction():
        return fit(contrast_from_probe(lm, probe, "sun", "conv6", batch_size=bs), "mean")

    plain_decoded()                                           # warm caches (files, sklearn)
    direction()
    t_plain_dec, _ = _timed(plain_decoded)
    t_dir, d = _timed(direction)
    print(f"direction from {len(probe)} images / decode + plain forward: {t_dir / t_plain_dec:.2f}"
          f"  (goal <= 1.5); {t_dir:.2f} s vs {t_plain_dec:.2f} s")

    lset = open_labelled_set(f"toyworld:{args.images}", lm, seed=0)
    x = [xb for _i, xb in lset.batches(bs)]

    def plain():
        with torch.no_grad():
            for xb in x:
                lm.model(lm.normalize(xb))

    plain()
    t_plain, _ = _timed(plain)
    t_dose, _ = _timed(lambda: dose_response(lm, d, x, [0, 1, 2, 4, 8]))
    print(f"dose-response, 5 alphas on {len(lset)} images / plain forward: {t_dose / t_plain:.2f}"
          f"  (goal <= 5); {t_dose:.2f} s vs {t_plain:.2f} s")
    t_rand, _ = _timed(lambda: dose_response(lm, d, x, [0, 1, 2, 4, 8], random=1))
    print(f"  the same with one random control direction: {t_rand / t_plain:.2f}")

    class InMemory:          # the set's images already decoded, as the plain pass had them
        spec, paths, labels = lset.spec, lset.paths, lset.labels
        class_names, source = lset.class_names, None

        def __len__(self):
            return len(lset)

        def batches(self, _bs):
            return ((None, xb) for xb in x)

    layers = [f"conv{i}" for i in range(1, 7)]
    readout(lm, InMemory(), layers, use_cache=False)              # warm sklearn
    t_read, r = _timed(lambda: readout(lm, InMemory(), layers, use_cache=False))
    print(f"readout of 6 layers on {len(lset)} images / plain forward: {t_read / t_plain:.2f}"
          f"  (goal <= 2); {t_read:.2f} s vs {t_plain:.2f} s "
          f"(held-out acc conv1 {r['layers'][0]['acc_heldout']:.2f} -> conv6 "
          f"{r['layers'][-1]['acc_heldout']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
