"""Cost of dictionary features, as a ratio to the dissection of the layer (`make bench`).

    python benchmarks/bench_features.py [--images 2000] [--device cpu|cuda]

The trained ToyWorld CNN, layer conv6 (128 channels, 14x14), `--images` images of world seed 7,
batch 50, one DataLoader worker, one torch thread. Measured in one process:
1. the dissection of conv6 alone (forward, tally, write: `python -m dissect run`), timed whole;
2. `python -m dissect features RUN --layer conv6 --method sae` (K = 512, topk 8: two seeded
   fits for the stability figure, then the feature dissection through the same engine).
Goal: (2) / (1) <= 2. Also prints the fit's share of (2).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from dissect.__main__ import main as cli
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cli(["run", "--model", "toyworld", "--layer", "conv6", "--probe", "toyworld:50",
             "--seed", "7", "--quiet", "--workers", "0", "--out", str(Path(tmp) / "warm")])
        t = time.perf_counter()
        assert cli(["run", "--model", "toyworld", "--layer", "conv6", "--probe",
                    f"toyworld:{args.images}", "--seed", "7", "--batch-size", "50",
                    "--workers", "1", "--quiet", "--device", args.device,
                    "--out", str(run)]) == 0
        t_run = time.perf_counter() - t
        t = time.perf_counter()
        assert cli(["features", str(run), "--layer", "conv6", "--method", "sae", "--k", "512",
                    "--device", args.device, "--quiet"]) == 0
        t_feat = time.perf_counter() - t
        info = json.loads((run / "layers" / "conv6@sae512" / "basis.json").read_text())
    print(f"ToyWorld conv6, {args.images} images, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"features (SAE 512: fit + dissection) / dissection of conv6: "
          f"{t_feat / t_run:.2f}  (goal <= 2)")
    print(f"  share of the features command spent fitting (two seeds): "
          f"{info['fit_seconds'] / t_feat:.2f}; R² {info['r2']:.3f}, L0 {info['l0']:.1f}, "
          f"dead {info['dead']}, stability {info['stability']:.3f}")


if __name__ == "__main__":
    main()
