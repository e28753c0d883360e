"""python -m dissect tcav --model M --layer L --concept C[,C2] --target CLASS --set S
    [--random 20] [--probe P] [--json]

Concept images come from --probe (default: the --set's own ToyWorld world, with its pixel labels);
target images are the --set's images of CLASS. One concept: its result at the top level of the
JSON; several: also a `concepts` list, Bonferroni-corrected over them.
"""
from __future__ import annotations

import argparse
import sys

from dissect.commands.direction import add_model_args, load


RANGES = {"random": (2, 10_000)}   # a p-value needs random runs


def add_parser(sub) -> None:
    p = sub.add_parser("tcav", help="TCAV: a concept's directional sensitivity for a class")
    add_model_args(p)
    p.add_argument("--layer", required=True)
    p.add_argument("--concept", required=True, help="concept name(s), comma-separated")
    p.add_argument("--target", required=True, help="class name")
    p.add_argument("--set", required=True, help="toyworld:N or folder:DIR (ImageFolder layout)")
    p.add_argument("--probe", default=None, help="where concept images come from (default: the set's)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--random", type=int, default=20, help="number of random runs (default 20)")
    p.add_argument("--sample", type=int, default=50, help="images per concept/random sample")
    p.add_argument("--pooling", default="auto", help="auto (as the head pools) | max | mean")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from dissect.errors import DirectionError
    from dissect.interventions.labelled import open_labelled_set
    from dissect.directions.tcav import tcav
    lm = load(args)
    lset = open_labelled_set(args.set, lm, seed=args.seed, limit=args.limit, pair=args.pair)
    if args.probe:
        from dissect.probes.registry import open_probe
        opts = {"seed": args.seed, "pair": args.pair if args.probe.startswith("toyworld") else None}
        probe = open_probe(args.probe, **{k: v for k, v in opts.items() if v is not None})
    elif getattr(lset.source, "directory", None) is not None:
        from dissect.probes.broden import BrodenProbe
        probe = BrodenProbe(lset.source.directory)
        probe.pair = getattr(lset.source, "pair", None)
    else:
        raise DirectionError(f"set '{args.set}' has no concept pixels: give --probe P with "
                             "labelled concept images (toyworld:N, broden:DIR)")
    concepts = [c.strip() for c in args.concept.split(",") if c.strip()]
    res = tcav(lm, args.layer, concepts, args.target, lset, probe, args.random, args.pooling,
               args.seed, args.batch_size, args.sample)
    out = res[0].to_json()
    if len(res) > 1:
        out["concepts"] = [r.to_json() for r in res]
    if args.json:
        print(_dumps(out))
        return 0
    for r in res:
        mark = "significant" if r.significant else "not significant"
        print(f"TCAV({r.target}, {r.concept}) at {r.layer}: {r.score:.3f} (random "
              f"{sum(r.random_scores) / len(r.random_scores):.3f}), p = {r.p_value:.3g}, {mark} "
              f"at {r.threshold:.3g}")
    return 0


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")


if __name__ == "__main__":  # pragma: no cover
    from dissect.__main__ import main as cli
    sys.exit(cli(["tcav"] + sys.argv[1:]))

