"""python -m dissect default-run --runs DIR: make sure the app has a run to open (`make run`).

When DIR holds no complete run, builds the ToyWorld probe set (cached), dissects the ToyWorld
CNN's last two conv layers with the trust statistics (`--null 1000`: p-values, significance,
localisation) into DIR/toyworld-default, and explains conv6's units with compositional
formulas, one progress line per step. When a complete run exists it returns at once (no torch
import). The same run from the command line:

    python -m dissect run --model toyworld --layer conv5,conv6 --probe toyworld:2000 \
        --null 1000 --out runs/toyworld-default
    python -m dissect explain runs/toyworld-default --layer conv6 --no-exact
    python -m dissect features runs/toyworld-default --layer conv6 --method sae --k 512

`--features background` (what `make run` passes) starts that last step, the SAE features of
conv6, as a background process once the run is there, so the app opens at once and the layer
"features of conv6 (SAE, 512)" appears in its picker when the fit is done (a few minutes here).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_N = 2000           # images in the default world
DEFAULT_LAYERS = ["conv5", "conv6"]
DEFAULT_NULL = 1000        # permutations: with the GPD tail fit, q <= 0.05 is reachable on conv6
EXPLAIN_LAYERS = ["conv6"]
EXPLAIN_EXACT = False      # the exhaustive check of overlapping beams (~30 s more) is left to
                           # `python -m dissect explain`: the first start stays under 2 minutes
RUN_NAME = "toyworld-default"
FEATURES = ["--layer", "conv6", "--method", "sae", "--k", "512"]   # conv6@sae512


def add_parser(sub) -> None:
    p = sub.add_parser("default-run", help="build the ToyWorld default run when DIR has none")
    p.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="ToyWorld images to dissect")
    p.add_argument("--seed", type=int, default=0, help="ToyWorld seed")
    p.add_argument("--weights", default="default", help="ToyWorld weights (default | FILE)")
    p.add_argument("--null", type=int, default=DEFAULT_NULL, metavar="B",
                   help=f"permutations for the trust columns (default {DEFAULT_NULL}; 0: none)")
    p.add_argument("--no-explain", action="store_true", help="skip conv6's formulas")
    p.add_argument("--features", choices=["no", "yes", "background"], default="no",
                   help="conv6's SAE features (conv6@sae512): no, yes (wait for them), or "
                        "background (make run: the app opens meanwhile)")
    p.add_argument("--force", action="store_true", help="build even when a complete run exists")
    p.set_defaults(handler=main)


def complete_runs(root: Path) -> list[Path]:
    """Run folders directly under `root` whose run.json says complete (cheap: JSON only)."""
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if (d / "run.json").is_file():
            from dissect.runs.safe import read_json
            try:
                info = read_json(d / "run.json", d)                # regular file, capped
                if isinstance(info, dict) and info.get("status") == "complete":
                    out.append(d)
            except (OSError, ValueError):
                continue
    return out


def main(args: argparse.Namespace) -> int:
    root = Path(args.runs)
    done = complete_runs(root)
    if done and not args.force:
        ours = root / RUN_NAME
        if ours in done and not args.no_explain and not all(
                (ours / "layers" / layer / "formulas.json").is_file() for layer in EXPLAIN_LAYERS):
            from dissect.formulas.explain import explain_run    # stopped before its formulas
            print(f"runs: {ours} has no formulas yet; explaining {', '.join(EXPLAIN_LAYERS)}",
                  file=sys.stderr, flush=True)
            explain_run(ours, list(EXPLAIN_LAYERS), seed=args.seed, exact=EXPLAIN_EXACT,
                        progress=True)
        print(f"runs: {len(done)} complete in {root} (e.g. {done[0].name}); "
              "starting the app", file=sys.stderr)
        if ours in done:
            add_features(ours, args.features)
        return 0
    rc = build_default_run(root, n=args.n, seed=args.seed, weights=args.weights,
                           null=args.null, explain=not args.no_explain)
    add_features(root / RUN_NAME, args.features)
    return rc


def add_features(run: Path, how: str) -> None:
    """conv6's SAE features in `run` (when missing): now ("yes") or in a background process
    whose output goes to <run>/cache/features.log ("background")."""
    import subprocess
    if how == "no" or (run / "layers" / "conv6@sae512").is_dir():
        return
    cmd = [sys.executable, "-m", "dissect", "features", str(run), *FEATURES]
    if how == "yes":
        subprocess.run(cmd, check=False)
        return
    log = run / "cache" / "features.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        subprocess.Popen(cmd, stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    print(f"features: conv6's SAE (conv6@sae512) is fitting in the background (log: {log}); "
          "it appears in the layer picker when done", file=sys.stderr)


def build_default_run(root: Path, n: int = DEFAULT_N, seed: int = 0, weights: str = "default",
                      null: int = DEFAULT_NULL, explain: bool = True) -> int:
    """Build the ToyWorld world, dissect conv5/conv6 with the trust columns and explain conv6
    into root/toyworld-default; one progress line per step on stderr."""
    import torch

    from dissect.engine.config import DissectConfig
    from dissect.engine.dissection import dissect
    from dissect.runs.folder import open_run
    from dissect.toyworld import toyworld_probe
    from dissect.trust.columns import summary_line
    torch.set_num_threads(2)
    t0 = time.time()
    steps = 3 if explain else 2

    def say(text: str) -> None:
        print(f"{text} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    print(f"First start: a ToyWorld run for the studio ({steps} steps; later starts skip this).",
          file=sys.stderr, flush=True)

    def show(d: int, total: int) -> None:
        print(f"\r  world: {d}/{total} images", end="" if d < total else "\n",
              file=sys.stderr, flush=True)

    print(f"[1/{steps}] ToyWorld probe set: {n} images, seed {seed}", file=sys.stderr, flush=True)
    probe = toyworld_probe(n, seed=seed, progress=show)
    say(f"[1/{steps}] world ready: {probe.directory}")
    print(f"[2/{steps}] dissecting the ToyWorld CNN's {', '.join(DEFAULT_LAYERS)}"
          + (f" with the trust statistics (--null {null})" if null else ""),
          file=sys.stderr, flush=True)
    cfg = DissectConfig(model="toyworld", weights=weights, layers=list(DEFAULT_LAYERS),
                        probe=f"toyworld:{n}", probe_options={"seed": seed},
                        batch_size=50, workers=1, seed=seed, null=null)
    out = dissect(cfg, root / RUN_NAME, probe=probe, progress=True)
    run = open_run(out)
    for layer in run.layers:
        units = run.units(layer)
        print(f"  {layer}: {int(units['interpretable'].sum())}/{len(units)} units "
              f"interpretable (IoU >= {cfg.iou_threshold})", file=sys.stderr)
        line = summary_line(layer, units)
        if line:
            print(f"  {line}", file=sys.stderr)
    say(f"[2/{steps}] dissection ready: {out}")
    if explain:
        from dissect.commands.explain import report
        from dissect.formulas.explain import explain_run
        print(f"[3/{steps}] compositional formulas for {', '.join(EXPLAIN_LAYERS)}",
              file=sys.stderr, flush=True)
        summary = explain_run(out, list(EXPLAIN_LAYERS), seed=seed, exact=EXPLAIN_EXACT,
                              progress=True)
        print("  " + report(summary).replace("\n", "\n  "), file=sys.stderr)
        say(f"[3/{steps}] formulas ready")
    return 0
