"""Dissection speed and memory, as ratios (run on an idle machine: `make bench`).

    python benchmarks/bench_dissection.py [--images 500] [--repeats 2] [--rss 500,2000]

1. (full dissection wall time) / (plain forward pass over the same images, same loader):
   resnet18 `layer4`, random init (seed 0), a generated Broden-format set at 224 px with
   112 px masks, batch 32, one DataLoader worker, torch's default threads. Goal ≤ 1.3.
2. Peak RSS of a dissection at 500 and at 2,000 images (each in its own subprocess). The
   activation cache is read and written with pread/pwrite (dissect.engine.act_cache), so none
   of its pages count. Goal: peak RSS at 2,000 within 1.1× that at 500.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".cache" / "bench" / "broden2000"


def ensure_data(n: int = 2000) -> Path:
    from dissect.probes.synthetic_broden import make_synthetic_broden
    if not (DATA / "index.csv").exists():
        print(f"generating {n} synthetic Broden images at 224 px in {DATA} ...", flush=True)
        make_synthetic_broden(DATA, n=n, image_size=224, mask_size=112, seed=0)
    return DATA


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def baseline(lm, probe, batch_size: int, workers: int) -> tuple[float, float]:
    import torch
    from dissect.probes.types import probe_loader
    t, c = time.perf_counter(), cpu_seconds()
    with torch.inference_mode():
        for batch in probe_loader(probe, batch_size, workers):
            lm.model(lm.normalize(batch.images))
    return time.perf_counter() - t, cpu_seconds() - c


def dissection(lm, probe, n: int, batch_size: int, workers: int) -> tuple[float, float, dict]:
    from dissect.engine.config import DissectConfig
    from dissect.engine.dissection import dissect
    from dissect.runs.folder import open_run
    cfg = DissectConfig(model="resnet18", weights="none", layers=["layer4"],
                        probe=f"broden:{DATA}", probe_options={"limit": n},
                        batch_size=batch_size, workers=workers)
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        t, c = time.perf_counter(), cpu_seconds()
        dissect(cfg, Path(tmp) / "run", lm=lm, probe=probe, progress=False)
        wall, cpu = time.perf_counter() - t, cpu_seconds() - c
        timings = open_run(Path(tmp) / "run").info["timings"]
    return wall, cpu, timings


def child_rss(n: int) -> None:
    """In a fresh process: one dissection of n images; print peak RSS and cache size."""
    from dissect.probes.broden import BrodenProbe
    from dissect.models.registry import load_model
    lm = load_model("resnet18", "none", seed=0)
    probe = BrodenProbe(DATA, limit=n)
    dissection(lm, probe, n, 32, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"images": n, "peak_rss": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rss", default="500,2000", help="image counts for the RSS check ('' = skip)")
    ap.add_argument("--child-rss", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    (ROOT / ".cache").mkdir(exist_ok=True)
    ensure_data()
    if args.child_rss:
        return child_rss(args.child_rss)

    import torch
    from dissect.probes.broden import BrodenProbe
    from dissect.models.registry import load_model
    lm = load_model("resnet18", "none", seed=0)
    probe = BrodenProbe(DATA, limit=args.images)
    print(f"bench_dissection: resnet18 layer4 (random init), {args.images} images 224 px, "
          f"masks 112 px, batch {args.batch_size}, workers {args.workers}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    if args.repeats:
        baseline(lm, BrodenProbe(DATA, limit=args.batch_size), args.batch_size, 0)  # warm-up
    base, full, base_cpu, full_cpu = [], [], [], []
    for r in range(args.repeats):
        w, c = baseline(lm, probe, args.batch_size, args.workers)
        base.append(w); base_cpu.append(c)
        w, c, timings = dissection(lm, probe, args.images, args.batch_size, args.workers)
        full.append(w); full_cpu.append(c)
        print(f"  repeat {r + 1}: forward-only {base[-1]:.1f}s, dissection {full[-1]:.1f}s "
              f"(phases {timings})", flush=True)
    if args.repeats:
        ratio = statistics.median(full) / statistics.median(base)
        cpu_ratio = statistics.median(full_cpu) / statistics.median(base_cpu)
        print(f"dissection / forward-only wall time: {ratio:.2f}  (goal ≤ 1.3)")
        print(f"dissection / forward-only CPU time:  {cpu_ratio:.2f}  (less sensitive to load)")

    counts = [int(v) for v in args.rss.split(",") if v]
    if counts:
        rows = []
        for n in counts:
            out = subprocess.run([sys.executable, __file__, "--child-rss", str(n)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        mb = 2 ** 20
        for r in rows:
            print(f"peak RSS at {r['images']} images: {r['peak_rss'] / mb:.0f} MiB")
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            print(f"peak RSS, {b['images']} vs {a['images']} images: "
                  f"{b['peak_rss'] / a['peak_rss']:.2f}x (goal ≤ 1.1)")


if __name__ == "__main__":
    main()
