"""Dissection of a vision transformer's token layer, as a ratio to its plain forward pass.

    python benchmarks/bench_vit.py [--images 500] [--device cpu|cuda]

1. torchvision `vit_b_16` (random init, seed 0), `encoder.layers.encoder_layer_11` (768 units on
   the 14×14 patch grid, the class token dropped by dissect.models.layout), on the generated
   Broden-format set of bench_dissection.py (224 px images, 112 px masks). Goal ≤ 1.3, as for CNNs.
2. The ToyWorld ViT (`toyworld-vit`, its trained weights), `blocks.3`, on the same images.
Each ratio is (full dissection wall time) / (forward passes over the same images, same loader),
measured in one run; batch 32, one DataLoader worker.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dissection import DATA, ensure_data  # noqa: E402


def forward(lm, probe, batch_size: int) -> float:
    import torch
    from dissect.probes.types import probe_loader
    t = time.perf_counter()
    with torch.inference_mode():
        for batch in probe_loader(probe, batch_size, 1):
            lm.model(lm.normalize(batch.images.to(lm.device)))
    return time.perf_counter() - t


def dissection(lm, probe, model: str, layer: str, n: int, batch_size: int, device: str) -> float:
    from dissect.engine.config import DissectConfig
    from dissect.engine.dissection import dissect
    cfg = DissectConfig(model=model, weights=lm.weights, layers=[layer], probe=f"broden:{DATA}",
                        probe_options={"limit": n}, batch_size=batch_size, workers=1,
                        device=device)
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        t = time.perf_counter()
        dissect(cfg, Path(tmp) / "run", lm=lm, probe=probe, progress=False)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    (ROOT / ".cache").mkdir(exist_ok=True)
    ensure_data()
    from dissect.models.registry import load_model
    from dissect.probes.broden import BrodenProbe
    probe = BrodenProbe(DATA, limit=args.images)
    for model, weights, layer in (("vit_b_16", "none", "encoder.layers.encoder_layer_11"),
                                  ("toyworld-vit", None, "blocks.3")):
        lm = load_model(model, weights, seed=0, device=args.device)
        forward(lm, BrodenProbe(DATA, limit=args.batch_size), args.batch_size)   # warm-up
        base, full = [], []
        for _ in range(args.repeats):
            base.append(forward(lm, probe, args.batch_size))
            full.append(dissection(lm, probe, model, layer, args.images, args.batch_size,
                                   args.device))
        ratio = statistics.median(full) / statistics.median(base)
        print(f"{model} {layer}, {args.images} images, {args.device}: dissection / forward "
              f"{ratio:.2f} (goal ≤ 1.3)", flush=True)


if __name__ == "__main__":
    main()
