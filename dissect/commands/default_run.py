"""python -m dissect default-run --runs DIR: make sure the app has a run to open (`make run`).

When DIR holds no complete run, builds the ToyWorld probe set (cached) and dissects the
ToyWorld CNN's last two conv layers into DIR/toyworld-default, showing progress. When a
complete run exists it returns at once (no torch import).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_N = 2000           # images in the default world: ~35 s on an idle 2-core machine
DEFAULT_LAYERS = ["conv5", "conv6"]
RUN_NAME = "toyworld-default"


def add_parser(sub) -> None:
    p = sub.add_parser("default-run", help="build the ToyWorld default run when DIR has none")
    p.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="ToyWorld images to dissect")
    p.add_argument("--seed", type=int, default=0, help="ToyWorld seed")
    p.add_argument("--weights", default="default", help="ToyWorld weights (default | FILE)")
    p.add_argument("--force", action="store_true", help="build even when a complete run exists")
    p.set_defaults(handler=main)


def complete_runs(root: Path) -> list[Path]:
    """Run folders directly under `root` whose run.json says complete (cheap: JSON only)."""
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if (d / "run.json").is_file():
            from dissect.runs.schema import read_info
            try:
                if read_info(d).get("status") == "complete":     # dissect.runs.safe
                    out.append(d)
            except (OSError, ValueError):
                continue
    return out


def main(args: argparse.Namespace) -> int:
    root = Path(args.runs)
    done = complete_runs(root)
    if done and not args.force:
        print(f"runs: {len(done)} complete in {root} (e.g. {done[0].name}); "
              "starting the app", file=sys.stderr)
        return 0
    return build_default_run(root, n=args.n, seed=args.seed, weights=args.weights)


def build_default_run(root: Path, n: int = DEFAULT_N, seed: int = 0,
                      weights: str = "default") -> int:
    """Build the ToyWorld world and dissect conv5/conv6 into root/toyworld-default."""
    import torch

    from dissect.engine.config import DissectConfig
    from dissect.engine.dissection import dissect
    from dissect.toyworld import toyworld_probe
    torch.set_num_threads(2)
    t0 = time.time()
    print(f"First start: building ToyWorld ({n} images, seed {seed}) and dissecting the "
          f"ToyWorld CNN ({', '.join(DEFAULT_LAYERS)}). Later starts skip this.",
          file=sys.stderr, flush=True)

    def show(d: int, total: int) -> None:
        print(f"\r  world: {d}/{total} images", end="" if d < total else "\n",
              file=sys.stderr, flush=True)

    probe = toyworld_probe(n, seed=seed, progress=show)
    print(f"  world ready ({time.time() - t0:.0f} s): {probe.directory}", file=sys.stderr,
          flush=True)
    cfg = DissectConfig(model="toyworld", weights=weights, layers=list(DEFAULT_LAYERS),
                        probe=f"toyworld:{n}", probe_options={"seed": seed},
                        batch_size=50, workers=1, seed=seed)
    out = dissect(cfg, root / RUN_NAME, probe=probe, progress=True)
    print(f"  dissection ready ({time.time() - t0:.0f} s): {out}", file=sys.stderr, flush=True)
    return 0
