"""python -m dissect readout --model M --layers L1,L2,... --set S [--dola] [--concepts a,b |
    --run RUN] [--pair OBJECT] [--json]

A linear head per layer on pooled features (cached): held-out accuracy per layer, per-concept
AUROC by layer (ToyWorld sets; the concepts given or the run's labels), the overthinking rate,
and with --dola DoLa's contrast of the final output with the most divergent early head.
"""
from __future__ import annotations

import argparse
import sys

from dissect.commands.direction import add_model_args, load


def add_parser(sub) -> None:
    p = sub.add_parser("readout", help="linear early-exit heads per layer; DoLa; overthinking")
    add_model_args(p)
    p.add_argument("--layers", required=True, help="comma-separated layer names")
    p.add_argument("--set", required=True, help="toyworld:N or folder:DIR (ImageFolder layout)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--dola", action="store_true", help="DoLa contrast against the final output")
    p.add_argument("--concepts", default=None, help="concepts to read out per layer (AUROC)")
    p.add_argument("--run", default=None, help="read out the concepts this run's units are labelled with")
    p.add_argument("--pooling", default="auto", help="auto (as the head pools) | max | mean")
    p.add_argument("--no-cache", action="store_true", help="recompute the pooled features")
    p.set_defaults(handler=main)


def run_concepts(path: str, limit: int = 8) -> list[str]:
    """The most frequent unit labels of a run (over its layers), at most `limit`."""
    import pandas as pd
    from dissect.runs.folder import open_run
    run = open_run(path)
    labels = pd.concat([run.units(l)["label"].astype(str) for l in run.layers])
    labels = labels[labels != ""]
    return list(labels.value_counts().head(limit).index)


def main(args: argparse.Namespace) -> int:
    from dissect.interventions.labelled import open_labelled_set
    from dissect.directions.readout import readout
    lm = load(args)
    layers = [l.strip() for l in args.layers.split(",") if l.strip()]
    concepts = [c.strip() for c in (args.concepts or "").split(",") if c.strip()]
    if args.run and not concepts:
        concepts = run_concepts(args.run)
    lset = open_labelled_set(args.set, lm, seed=args.seed, limit=args.limit, pair=args.pair)
    out = readout(lm, lset, layers, args.pooling, args.seed, args.dola, concepts,
                  args.batch_size, use_cache=not args.no_cache)
    if args.json:
        print(_dumps(out))
        return 0
    print(f"readout on {args.set}: {out['images']} images, {out['heldout_images']} held out, "
          f"{out['pooling']} pooling; final output accuracy {out['final_acc']:.2%}")
    for row in out["layers"]:
        extra = "".join(f"  {c} AUROC {v:.3f}" for c, v in (row.get("auroc") or {}).items()
                        if v is not None)
        print(f"  {row['layer']:<16} {row['units']:>5} units  acc {row['acc_heldout']:.2%}{extra}")
    o = out["overthinking"]
    print(f"overthinking: {o['early_right']} of {o['errors']} errors had an earlier head right "
          f"({o['rate']:.1%})")
    if "dola" in out:
        dl = out["dola"]
        print(f"DoLa: accuracy {dl['acc']:.2%} vs final {dl['final_acc']:.2%} ({dl['changed']} "
              f"predictions changed); premature layers: {dl['premature']}")
    return 0


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")


if __name__ == "__main__":  # pragma: no cover
    from dissect.__main__ import main as cli
    sys.exit(cli(["readout"] + sys.argv[1:]))

