"""Cost of the trust statistics, as ratios to the dissection itself (`make bench`, idle machine).

    python benchmarks/bench_trust.py [--images 2000] [--null 1000]

resnet18 `layer4`, random init (seed 0), generated Broden-format images at 224 px (112 px masks),
batch 32, one DataLoader worker. Measured in one process:
1. a plain dissection (iou_heldout only) and one with `--null 1000`, each timed whole;
   goal: (null run - plain run) / plain run ≤ 1, i.e. a run with nulls costs ≤ 2× a plain run;
2. inside the null run, the time spent in the trust statistics (permutations, rolls, bootstrap)
   against the rest of that run: the same goal, less sensitive to load between the two runs;
3. a naive null (one full tally per permutation) would cost B × the tally phase: printed for scale.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--null", type=int, default=1000)
    args = ap.parse_args()
    (ROOT / ".cache").mkdir(exist_ok=True)
    from bench_dissection import DATA, ensure_data
    ensure_data()

    import torch

    import dissect.engine.results as results
    from dissect.probes.broden import BrodenProbe
    from dissect.engine.config import DissectConfig
    from dissect.engine.dissection import dissect
    from dissect.models.registry import load_model
    from dissect.runs.folder import open_run

    spent = {"trust": 0.0}
    real = results.trust_columns

    def timed(*a, **kw):
        t = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            spent["trust"] += time.perf_counter() - t

    results.trust_columns = timed
    lm = load_model("resnet18", "none", seed=0)
    probe = BrodenProbe(DATA, limit=args.images)
    print(f"bench_trust: resnet18 layer4 (random init), {args.images} images 224 px, masks 112 px, "
          f"--null {args.null}, torch threads {torch.get_num_threads()}", flush=True)
    walls, trust, timings = {}, {}, {}
    for null in (0, args.null):
        cfg = DissectConfig(model="resnet18", weights="none", layers=["layer4"],
                            probe=f"broden:{DATA}", probe_options={"limit": args.images},
                            batch_size=32, workers=1, null=null)
        spent["trust"] = 0.0
        with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
            t = time.perf_counter()
            dissect(cfg, Path(tmp) / "run", lm=lm, probe=probe, progress=False)
            walls[null] = time.perf_counter() - t
            timings[null] = open_run(Path(tmp) / "run").info["timings"]
        trust[null] = spent["trust"]
        print(f"  --null {null}: {walls[null]:.1f}s (phases {timings[null]}, trust statistics "
              f"{trust[null]:.1f}s)", flush=True)
    plain, full = walls[0], walls[args.null]
    inside = trust[args.null] / (full - trust[args.null])
    print(f"(null run - plain run) / plain run: {(full - plain) / plain:.2f}  (goal ≤ 1)")
    print(f"trust statistics / rest of the null run: {inside:.2f}  (goal ≤ 1; one run, "
          "less sensitive to load)")
    naive = args.null * timings[0]["tally"] / plain
    print(f"naive null (one tally per permutation) / plain run: ~{naive:.0f}  (for scale)")


if __name__ == "__main__":
    main()
