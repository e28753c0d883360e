"""python -m dissect direction --model M --layer L --concept C --probe P [--method mean|pca|probe]
    [--pooling auto|max|mean|spatial] [--pair OBJECT] --out DIR [--json]

Contrast sets: `--probe P` (images with vs without the concept's pixels), `--run RUN` (the run's
own probe), or `--positives DIR --negatives DIR` (two image folders). Writes
DIR/direction.safetensors and DIR/direction.json.
"""
from __future__ import annotations

import argparse
import sys


def add_model_args(p) -> None:
    """--model/--weights/--classes/--device/--seed/--batch-size, shared by the direction commands."""
    p.add_argument("--model", default="toyworld", help="model name (default toyworld)")
    p.add_argument("--weights", default=None,
                   help="none | ENUM | FILE (default: toyworld's trained weights, else none)")
    p.add_argument("--classes", default=None, help="class names file (one per line)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pair", default=None, metavar="OBJECT",
                   help="ToyWorld sets/probes: each scene drawn with and without OBJECT")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def load(args):
    """The LoadedModel the shared arguments name."""
    import torch
    from dissect.models.registry import load_model
    torch.manual_seed(args.seed)
    weights = args.weights or ("default" if args.model == "toyworld" else "none")
    return load_model(args.model, weights, classes=args.classes, device=args.device,
                      seed=args.seed)


def add_parser(sub) -> None:
    p = sub.add_parser("direction", help="a concept direction at one layer (mean, pca or probe)")
    add_model_args(p)
    p.add_argument("--layer", default=None, help="the layer (required unless --feature)")
    p.add_argument("--feature", nargs=3, default=None, metavar=("RUN", "LAYER", "K"),
                   help="save feature K of a feature layer (e.g. runs/toy conv6@sae512 3) as a "
                        "direction: its decoder row")
    p.add_argument("--concept", default=None, help="concept name (required with --probe/--run)")
    p.add_argument("--probe", default=None, help="broden:DIR | toyworld[:N] | folder:DIR")
    p.add_argument("--segmenter", default=None, help="for folder: probes, e.g. color")
    p.add_argument("--run", default=None, help="use this run's probe")
    p.add_argument("--positives", default=None, metavar="DIR", help="folder of concept images")
    p.add_argument("--negatives", default=None, metavar="DIR", help="folder of other images")
    p.add_argument("--method", default="mean", help="mean | pca | probe")
    p.add_argument("--pooling", default="auto",
                   help="auto (as the head pools) | max | mean | spatial")
    p.add_argument("--limit", type=int, default=None, help="at most this many probe images")
    p.add_argument("--out", required=True, help="folder for direction.safetensors + .json")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from dissect.directions.concept import (METHODS, contrast_from_folders, contrast_from_probe, fit,
                                    save_direction)
    from dissect.errors import DirectionError
    if args.feature:
        return _feature(args)
    if not args.layer:
        raise DirectionError("give --layer NAME (or --feature RUN LAYER K)")
    if args.method not in METHODS:
        raise DirectionError(f"--method {args.method}: use {', '.join(METHODS)}")
    from dissect.runs.marker import prepare_out
    prepare_out(args.out, "direction", overwrite=True, clear=False)   # never into a run folder
    lm = load(args)
    if args.positives or args.negatives:
        if not (args.positives and args.negatives):
            raise DirectionError("give both --positives DIR and --negatives DIR")
        c = contrast_from_folders(lm, args.positives, args.negatives, args.layer,
                                  args.concept or "", args.pooling, args.batch_size, args.seed)
    else:
        if not args.concept:
            raise DirectionError("give --concept NAME (with --probe P or --run RUN)")
        c = contrast_from_probe(lm, _probe(args), args.concept, args.layer, args.pooling,
                                args.batch_size, seed=args.seed)
    d = fit(c, args.method, seed=args.seed)
    d.model, d.weights = lm.name, str(lm.weights)
    if args.pair:
        d.extra["pair"] = args.pair
    save_direction(d, args.out)
    out = d.to_json()
    out["out"] = str(args.out)
    if args.json:
        print(_dumps(out))
    else:
        print(f"{d.concept} at {d.layer} ({d.method}, {d.pooling} pooling): held-out AUROC "
              f"{d.auroc_heldout:.3f}, norm {d.norm:.4g}, sigma {d.sigma:.4g}, "
              f"{d.n_pos} with / {d.n_neg} without -> {args.out}")
    return 0


def _feature(args) -> int:
    from dissect.features.direction import feature_direction
    from dissect.directions.concept import save_direction
    from dissect.errors import FeatureError
    from dissect.runs.folder import open_run
    run_path, name, k = args.feature
    try:
        k = int(k)
    except ValueError:
        raise FeatureError(f"--feature {run_path} {name} {k}: K must be a feature number") \
            from None
    d = feature_direction(open_run(run_path), name, k)
    save_direction(d, args.out)
    out = {**d.to_json(), "out": str(args.out)}
    if args.json:
        print(_dumps(out))
    else:
        print(f"feature {k} of {name} ({d.concept}) at {d.layer}: sigma {d.sigma:.4g} -> "
              f"{args.out}")
    return 0


def _probe(args):
    from dissect.errors import DirectionError
    from dissect.probes.registry import open_probe, open_run_probe
    if args.run:
        from dissect.runs.folder import open_run
        return open_run_probe(open_run(args.run))
    if not args.probe:
        raise DirectionError("give --probe P (toyworld:N, broden:DIR, folder:DIR), --run RUN, or "
                             "--positives DIR --negatives DIR")
    opts = {"seed": args.seed, "limit": args.limit, "segmenter": args.segmenter,
            "pair": args.pair}
    return open_probe(args.probe, **{k: v for k, v in opts.items() if v is not None})


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")


if __name__ == "__main__":  # pragma: no cover
    from dissect.__main__ import main as cli
    sys.exit(cli(["direction"] + sys.argv[1:]))

