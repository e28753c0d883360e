"""python -m dissect sweep --ray local[:N]|ADDRESS (--models A,B [--weights W1,W2] --layers L
--probe P | --runs FILE.toml) --out-root DIR [run options]

Schedules several dissections on one Ray cluster at once and writes one run folder each:
DIR/<model> (DIR/<model>-<weights> when several weights are swept). Each run is sharded as
`run --ray` shards it, so the cluster stays busy across runs. A TOML file lists runs in
`[[run]]` tables (model, weights, layers, probe, out, and any `run` option), with top-level
keys as defaults for every run:

    probe = "broden:/data/broden1_224"
    layers = ["layer3", "layer4"]
    [[run]]
    model = "resnet18"
    weights = "ckpt/epoch10.pth"
    out = "r18-e10"
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_RUN_KEYS = {"model", "weights", "layers", "probe", "out", "quantile", "denominator",
             "batch_size", "workers", "device", "seed", "topk", "iou_threshold", "classes",
             "cache_dtype", "keep_acts", "categories", "split", "limit", "segmenter"}


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="many runs (models × weights) on one Ray cluster",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ray", required=True, metavar="local[:N]|ADDRESS")
    p.add_argument("--runs", default=None, help="a TOML file of [[run]] tables")
    p.add_argument("--models", default=None, help="comma-separated model names")
    p.add_argument("--weights", default="default",
                   help="comma-separated: default (trained) | none (random init) | ENUM | FILE")
    p.add_argument("--layers", "--layer", dest="layers", default=None)
    p.add_argument("--probe", default=None)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per shard")
    p.add_argument("--shards", type=int, default=None, help="shards per run")
    p.add_argument("--parallel", type=int, default=4, help="runs driven at once")
    p.add_argument("--no-acts", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out-root", required=True, help="folder that gets one run folder per run")
    p.set_defaults(handler=main)


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).name.split(".")[0] or text)[:60]


def plan_runs(args: argparse.Namespace) -> list[tuple[object, Path]]:
    """(DissectConfig, run folder) for every run the command line or TOML file asks for."""
    from dissect.engine.config import DissectConfig
    from dissect.errors import RunError
    root = Path(args.out_root)
    if args.runs:
        from dissect.runs.safe import read_bytes
        raw = read_bytes(args.runs, None, limit=1 << 20, owner="--runs",
                         fix="give a TOML file of [[run]] tables")
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise RunError(f"--runs {args.runs}: cannot read it as TOML "
                           f"({str(e).splitlines()[0][:100]})") from None
        defaults = {k: v for k, v in doc.items() if k != "run"}
        runs = [{**defaults, **r} for r in doc.get("run", [])]
        if not runs:
            raise RunError(f"--runs {args.runs}: no [[run]] tables")
    else:
        if not (args.models and args.layers and args.probe):
            raise RunError("sweep needs --models, --layers and --probe (or --runs FILE.toml)")
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        weights = [w.strip() for w in args.weights.split(",") if w.strip()] or ["default"]
        runs = [{"model": m, "weights": w, "layers": args.layers, "probe": args.probe,
                 "out": m if len(weights) == 1 else f"{m}-{_name(w)}"}
                for m in models for w in weights]
    plans = []
    for r in runs:
        bad = set(r) - _RUN_KEYS
        if bad:
            raise RunError(f"sweep run {r.get('out') or r.get('model')}: unknown keys "
                           f"{sorted(bad)}; use {', '.join(sorted(_RUN_KEYS))}")
        for need in ("model", "layers", "probe"):
            if need not in r:
                raise RunError(f"sweep run {r}: missing '{need}'")
        check_run_values(r, f"sweep run {str(r.get('out') or r.get('model'))[:60]}")
        layers = r["layers"].split(",") if isinstance(r["layers"], str) else list(r["layers"])
        opts = {k: r.get(k) for k in ("categories", "split", "limit", "segmenter")}
        opts["limit"] = opts["limit"] if opts["limit"] is not None else args.limit
        if isinstance(opts["categories"], str):
            opts["categories"] = opts["categories"].split(",")
        seed = r.get("seed", args.seed)
        cfg = DissectConfig(
            model=r["model"], weights=r.get("weights"),   # None: trained (resolve_weights)
            layers=[x.strip() for x in layers if x.strip()], probe=r["probe"],
            probe_options={k: v for k, v in {**opts, "seed": seed}.items() if v is not None},
            batch_size=r.get("batch_size", args.batch_size), device=r.get("device", args.device),
            seed=seed, keep_acts=r.get("keep_acts", not args.no_acts),
            **{k: r[k] for k in ("quantile", "denominator", "workers", "topk", "iou_threshold",
                                 "classes", "cache_dtype") if k in r})
        plans.append((cfg, root / _name(str(r.get("out") or r["model"]))))
    outs = [str(o) for _, o in plans]
    if len(set(outs)) != len(outs):
        raise RunError("sweep: two runs would share a run folder; give each an `out`")
    return plans


_TYPES = {"model": str, "weights": str, "probe": str, "out": str, "denominator": str,
          "device": str, "split": str, "segmenter": str, "classes": str, "cache_dtype": str,
          "quantile": float, "iou_threshold": float, "batch_size": int, "limit": int,
          "seed": int, "workers": int, "topk": int, "keep_acts": bool}


def check_run_values(r: dict, where: str) -> None:
    """RunError naming the first TOML value of the wrong type or out of range (before Ray)."""
    from dissect.commands.ranges import RANGES, check_value
    from dissect.errors import OptionError, RunError
    from dissect.runs.schema import check_layer_name
    for key, kind in _TYPES.items():
        if key not in r:
            continue
        v = r[key]
        ok = isinstance(v, bool) if kind is bool else (
            isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float
            else isinstance(v, kind) and not isinstance(v, bool))
        if not ok:
            raise RunError(f"{where}: '{key}' must be {'a ' + kind.__name__ if kind is not int else 'an int'}"
                           f", not {v!r:.40}")
        if key in RANGES:
            try:
                check_value(key, v, *RANGES[key])
            except OptionError as e:
                raise RunError(f"{where}: {e}") from None
    if "quantile" in r and not 0 < r["quantile"] < 1:
        raise RunError(f"{where}: quantile {r['quantile']} must be between 0 and 1")
    layers = r.get("layers")
    if isinstance(layers, str):
        layers = layers.split(",")
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
        raise RunError(f"{where}: 'layers' must be a string or a list of layer names")
    for layer in layers:
        check_layer_name(layer.strip(), where)
    cats = r.get("categories")
    if cats is not None and not (isinstance(cats, str) or (
            isinstance(cats, list) and all(isinstance(c, str) for c in cats))):
        raise RunError(f"{where}: 'categories' must be a string or a list of names")
    if r.get("denominator", "nd") not in ("nd", "netdissect-lite", "global"):
        raise RunError(f"{where}: denominator '{r['denominator']}' is not nd, "
                       "netdissect-lite or global")
    if r.get("cache_dtype", "float32") not in ("float32", "float16"):
        raise RunError(f"{where}: cache_dtype must be float32 or float16")


def main(args: argparse.Namespace) -> int:
    from dissect.engine.distributed import dissect_ray, ray_cluster
    plans = plan_runs(args)
    failed = 0
    with ray_cluster(args.ray, args.threads):
        def one(plan):
            cfg, out = plan
            try:
                dissect_ray(cfg, out, ray=args.ray, shards=args.shards, threads=args.threads,
                            progress=False, overwrite=args.overwrite)
                return out, None
            except Exception as e:   # one run's failure does not stop the others
                return out, e
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            for out, err in pool.map(one, plans):
                if err is None:
                    print(f"complete: {out}", file=sys.stderr)
                else:
                    failed += 1
                    print(f"failed: {out}: {err}", file=sys.stderr)
    for _, out in plans:
        print(out)
    return 1 if failed else 0
