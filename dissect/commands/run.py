"""python -m dissect run --model M --weights W --layer L1,L2 --probe SPEC --out RUN [options]

Fills (or resumes) a run folder; exit status 0 only when it is complete.
"""
from __future__ import annotations

import argparse
import signal
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="dissect layers of a model against a probe set into RUN",
                       description=__doc__)
    p.add_argument("--model", required=True, help="torchvision name, preset, or file.py:factory")
    p.add_argument("--weights", default=None,
                   help="default: trained (a preset's own, torchvision DEFAULT) | none: random "
                        "init, a baseline | ENUM (e.g. IMAGENET1K_V1) | FILE | URL")
    p.add_argument("--classes", default=None, help="class-name file (one per line)")
    p.add_argument("--layer", "--layers", dest="layer", required=True,
                   help="comma-separated module names, e.g. layer3,layer4")
    p.add_argument("--probe", required=True, help="broden:DIR | toyworld[:N] | folder:DIR")
    p.add_argument("--categories", default=None, help="comma-separated, e.g. object,part")
    p.add_argument("--split", default=None, help="only images of this split (e.g. val)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--segmenter", default=None, help="for folder: probes, e.g. color,ade20k")
    p.add_argument("--pair", default=None, metavar="OBJECT",
                   help="toyworld probes: each scene drawn with and without OBJECT")
    p.add_argument("--restyle", default=None, metavar="CONCEPT:STYLE",
                   help="toyworld probes: that concept drawn in another style, e.g. sea:snow")
    p.add_argument("--quantile", type=float, default=0.005, help="top fraction (default 0.005)")
    p.add_argument("--denominator", default="nd", choices=["nd", "netdissect-lite", "global"])
    p.add_argument("--iou-threshold", type=float, default=0.04)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="DataLoader decoding processes")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topk", type=int, default=20, help="top images kept per unit")
    p.add_argument("--cache", default="disk", choices=["disk", "ram"],
                   help="activation cache: on-disk memmap (resumable) or RAM")
    p.add_argument("--cache-dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--no-acts", action="store_true", help="do not keep acts.npy in the run")
    p.add_argument("--null", type=int, nargs="?", const=1000, default=0, metavar="B",
                   help="permutation and roll nulls with B draws (default 1000 when given bare): "
                        "p_value, q_value, significant, p_localised, iou_lo, iou_hi, "
                        "label_stability in units.csv")
    p.add_argument("--heldout", default="auto", choices=["auto", "split", "random"],
                   help="iou_heldout halves: the probe's train/val split when it has one (auto), "
                        "always it (split), or a seeded half (random)")
    p.add_argument("--baseline", default="", choices=["rotation", "random-init"],
                   help="label counts to compare with: the unit basis turned by a random "
                        "rotation (cached activations, no new forward pass) or the same "
                        "architecture with random weights (one extra run in RUN/baselines/)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", default=None, metavar="local[:N]|ADDRESS",
                   help="shard over Ray: a local cluster of N workers, or a cluster's HOST:PORT")
    p.add_argument("--shards", type=int, default=None,
                   help="with --ray: shard count (default: the cluster's CPUs / threads)")
    p.add_argument("--out", required=True, help="run folder")
    from dissect.models.layout import add_layout_options
    add_layout_options(p)
    p.add_argument("--explain", action="store_true",
                   help="also compute compositional formulas (as `python -m dissect explain`)")
    from dissect.commands.explain import add_options
    add_options(p, prefix="explain-")
    p.set_defaults(handler=main)


def _sigterm(_signum, _frame):
    raise KeyboardInterrupt


def check_options(args: argparse.Namespace) -> None:
    """RunError naming the first option out of range (before anything is loaded or written)."""
    import math

    from dissect.errors import RunError
    from dissect.runs.schema import check_layer_name
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--topk", args.topk, 1),
                             ("--workers", args.workers, 0), ("--limit", args.limit, 1),
                             ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise RunError(f"{flag} {value} must be at least {low}")
    if not 0 < args.quantile < 1:
        raise RunError(f"--quantile {args.quantile} must be between 0 and 1 (e.g. 0.005)")
    if not (math.isfinite(args.iou_threshold) and 0 <= args.iou_threshold <= 1):
        raise RunError(f"--iou-threshold {args.iou_threshold} must be between 0 and 1 "
                       "(e.g. 0.04)")
    layers = [l.strip() for l in args.layer.split(",") if l.strip()]
    if not layers:
        raise RunError("--layer names no layer; give module names, e.g. --layer layer3,layer4 "
                       "(`python -m dissect layers --model M` lists them)")
    for layer in layers:
        check_layer_name(layer, "--layer")
    if args.categories is not None and not [c for c in args.categories.split(",") if c.strip()]:
        raise RunError("--categories names no category; e.g. --categories object,part")
    if not args.model.strip():
        raise RunError("--model is empty; give a torchvision name (e.g. resnet18), a preset or "
                       "path/to/file.py:factory")


def main(args: argparse.Namespace) -> int:
    import torch

    from dissect.engine.config import DissectConfig
    from dissect.engine.dissection import dissect
    from dissect.errors import RunError
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
    check_options(args)
    if args.explain:
        from dissect.formulas.explain import check_options as check_explain
        check_explain(args.explain_length, args.explain_beam, getattr(args, "null", 0) or 0)
    layers = [l.strip() for l in args.layer.split(",") if l.strip()]
    opts = {"categories": args.categories.split(",") if args.categories else None,
            "split": args.split, "limit": args.limit, "seed": args.seed,
            "segmenter": args.segmenter, "pair": args.pair, "restyle": args.restyle}
    cfg = DissectConfig(
        model=args.model, weights=args.weights, layers=layers, probe=args.probe,
        probe_options={k: v for k, v in opts.items() if v is not None},
        quantile=args.quantile, denominator=args.denominator, batch_size=args.batch_size,
        workers=args.workers, device=args.device, seed=args.seed, topk=args.topk,
        iou_threshold=args.iou_threshold, classes=args.classes, cache=args.cache,
        cache_dtype=args.cache_dtype, keep_acts=not args.no_acts, null=args.null,
        heldout=args.heldout, baseline=args.baseline, layout=args.layout or "auto",
        grid=args.grid, prefix=args.prefix, include_prefix=args.include_prefix)
    if args.threads and not args.ray:       # with --ray: threads per shard
        torch.set_num_threads(args.threads)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    if args.ray and args.baseline:
        raise RunError(f"--baseline {args.baseline} runs on one machine (it needs the whole "
                       "activation cache); drop --ray, or drop --baseline")
    try:
        if args.ray:
            from dissect.engine.distributed import dissect_ray      # takes the run folder's lock too
            out = dissect_ray(cfg, args.out, ray=args.ray, shards=args.shards,
                              threads=args.threads or 1, progress=not args.quiet,
                              overwrite=args.overwrite)
        else:
            out = dissect(cfg, args.out, progress=not args.quiet, overwrite=args.overwrite)
    finally:
        signal.signal(signal.SIGTERM, previous)
    from dissect.runs.folder import open_run
    run = open_run(out)
    for layer in run.layers:
        units = run.units(layer)
        n = int(units["interpretable"].sum()) if "interpretable" in units else 0
        print(f"{layer}: {n}/{len(units)} units interpretable (IoU ≥ {cfg.iou_threshold})",
              file=sys.stderr)
        if cfg.null:
            from dissect.trust.columns import layer_warnings, summary_line
            for line in [summary_line(layer, units), *layer_warnings(units, cfg.null)]:
                if line:
                    print(line if line.startswith(layer) else f"note: {line}", file=sys.stderr)
    if args.explain:
        from dissect.commands.explain import report
        from dissect.formulas.explain import explain_run
        summary = explain_run(out, length=args.explain_length, beam=args.explain_beam,
                              null=getattr(args, "null", 0) or 0, seed=args.seed,
                              heldout=args.explain_heldout, exact=not args.explain_no_exact,
                              progress=not args.quiet)
        print(report(summary), file=sys.stderr)
    print(str(out))
    return 0
