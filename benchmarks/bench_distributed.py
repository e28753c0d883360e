"""Ray scale-out cost on one machine, as ratios (run on an idle machine: `make bench`).

    python benchmarks/bench_distributed.py [--images 2000]

The same `python -m dissect run` command (resnet18 `layer4`, random init, the generated
Broden-format set of bench_dissection at 224 px, batch 32) twice, each end to end in its own
process: one process with `--threads 2`, and `--ray local:2 --threads 1` (two shards of one
thread each, the local Ray cluster's start included). Prints:
1. (Ray wall) / (one-process wall). Goal ≤ 1.15: the engine costs little where it cannot help.
2. (driver's merge time) / (Ray wall). Goal ≤ 0.05.
3. An 8-node estimate from the measured per-shard times and driver costs (see docs/scale-out.md).
Also checks that both run folders hold identical iou.npy, units.csv and topk.npz.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def run(args: list[str], out: Path) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dissect", "run", *args, "--quiet",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"run failed: {p.stderr[-2000:]}")
    return time.perf_counter() - t


def estimate(info: dict, one_wall: float, ray_wall: float, nodes: int = 8) -> dict:
    """Wall time on `nodes` machines like this one (2 one-thread shards each) from this run.

    Shard compute scales with its images; the driver's setup (probe, model, Ray start), the
    merge (linear in the shard count) and the write (linear in images, not shards) do not.
    """
    shards = info["shards"]
    n = sum(s["total"] for s in shards)
    per_image = max((s["seconds"]["forward"] + s["seconds"]["tally"]) / s["total"]
                    for s in shards)
    t = info["timings"]
    compute = max(s["seconds"]["forward"] for s in shards) + \
        max(s["seconds"]["tally"] for s in shards)
    fixed = max(0.0, ray_wall - compute - t["merge"] - t["write"])   # start-up, transfers
    k = 2 * nodes
    est = fixed + per_image * n / k + t["merge"] * k / len(shards) + t["write"]
    return {"nodes": nodes, "shards": k, "wall": est, "speedup": one_wall / est,
            "fixed": fixed, "merge": t["merge"] * k / len(shards), "write": t["write"],
            "compute": per_image * n / k}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    a = ap.parse_args()
    from bench_dissection import ensure_data
    data = ensure_data(max(2000, a.images))
    common = ["--model", "resnet18", "--weights", "none", "--layer", "layer4", "--probe",
              f"broden:{data}", "--limit", str(a.images), "--batch-size", "32"]
    (ROOT / ".cache").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        one_out, ray_out = Path(tmp) / "one", Path(tmp) / "ray"
        one = run(common + ["--threads", "2"], one_out)
        ray = run(common + ["--threads", "1", "--ray", "local:2"], ray_out)
        info = json.loads((ray_out / "run.json").read_text())
        same = all(filecmp.cmp(one_out / "layers/layer4" / f, ray_out / "layers/layer4" / f,
                               shallow=False) for f in ("iou.npy", "units.csv", "topk.npz"))
    t = info["timings"]
    print(f"resnet18 layer4, {a.images} images, 224 px, batch 32")
    print(f"one process, 2 threads: {one:.1f} s;  --ray local:2, 1 thread each: {ray:.1f} s")
    print(f"ray / one-process wall: {ray / one:.2f}  (goal ≤ 1.15)")
    print(f"merge / ray wall: {t['merge'] / ray:.3f}  (goal ≤ 0.05; merge {t['merge']:.2f} s)")
    for s in info["shards"]:
        print(f"  shard {s['shard']}: {s['total']} images, forward {s['seconds']['forward']:.1f}"
              f" s, tally {s['seconds']['tally']:.1f} s")
    print(f"  driver: write {t['write']:.1f} s")
    e = estimate(info, one, ray)
    print(f"8-node estimate (16 one-thread shards): {e['wall']:.1f} s, speed-up "
          f"{e['speedup']:.1f}× over one process (fixed {e['fixed']:.1f} s, shard compute "
          f"{e['compute']:.1f} s, merge {e['merge']:.2f} s, write {e['write']:.1f} s)")
    print(f"run folders identical (iou.npy, units.csv, topk.npz): {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
