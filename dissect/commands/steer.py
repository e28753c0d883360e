"""python -m dissect steer --model M --direction DIR --alpha 0,1,2,4,8 (--images F... | --set S)
    [--units top:K] [--random [N]] [--with sea,boat] [--without sun] [--pair OBJECT] [--json]

Adds α·σ·direction at the direction's layer, at every position. --set: mean probability of every
class per α (and the same for N random directions of equal norm with --random); --images: top-5
classes per image per α. --with/--without keep only the set's images that show / lack those
concepts (ToyWorld sets).
"""
from __future__ import annotations

import argparse
import sys

from dissect.commands.direction import add_model_args, load


def add_parser(sub) -> None:
    p = sub.add_parser("steer", help="add a concept direction to a layer and measure the effect")
    add_model_args(p)
    p.add_argument("--direction", required=True, metavar="DIR", help="a saved direction folder")
    p.add_argument("--alpha", default="0,1,2,4,8", help="comma-separated multiples of sigma")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", nargs="+", default=None, metavar="FILE")
    what.add_argument("--set", default=None, help="toyworld:N or folder:DIR (ImageFolder layout)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images of --set")
    p.add_argument("--units", default=None, metavar="top:K",
                   help="shift only the K units whose single-unit readout is best (ITI)")
    p.add_argument("--random", nargs="?", type=int, const=5, default=0, metavar="N",
                   help="control: N random directions of the same norm (default 5)")
    p.add_argument("--with", dest="require", default=None, help="keep images showing these concepts")
    p.add_argument("--without", dest="exclude", default=None, help="keep images lacking these")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import torch
    from dissect.directions.concept import check_direction, load_direction
    from dissect.models.registry import layer_info
    from dissect.directions.steering import dose_response, parse_alphas, parse_top
    alphas = parse_alphas(args.alpha)
    d = load_direction(args.direction)
    lm = load(args)
    check_direction(d, lm)
    check_direction(d, lm, channels=layer_info(lm, d.layer).shape[0])
    units = parse_top(args.units, d)
    info = {"direction": str(args.direction), "layer": d.layer, "concept": d.concept,
            "method": d.method, "sigma": round(d.sigma, 6), "units": units}
    if args.images:
        from dissect.interventions.ablation import image_tensor
        xs = [image_tensor(lm, path) for path in args.images]
        res = dose_response(lm, d, [torch.stack(xs)], alphas, units, args.random, args.seed,
                            keep_probs=True)
        images = [{"path": path, "top5": [_top5(res.probs[i, a], lm.class_names)
                                          for a in range(len(alphas))]}
                  for i, path in enumerate(args.images)]
    else:
        from dissect.interventions.labelled import open_labelled_set
        from dissect.directions.presence import select
        lset = open_labelled_set(args.set, lm, seed=args.seed, limit=args.limit, pair=args.pair)
        lset = select(lset, _names(args.require), _names(args.exclude))
        res = dose_response(lm, d, (x for _i, x in lset.batches(args.batch_size)), alphas, units,
                            args.random, args.seed)
        images = len(lset)
    out = {"alphas": alphas, "classes": res.classes_json(res.p_mean), "images": images, **info}
    if res.random_p_mean is not None:
        out["random"] = {"classes": res.classes_json(res.random_p_mean), "n": res.n_random}
    if args.json:
        print(_dumps(out))
        return 0
    print(f"steering {d.layer} along '{d.concept}' ({d.method}), alpha x sigma {d.sigma:.4g}"
          + (f", units {units}" if units else ""))
    print("  " + f"{'class':<16}" + "".join(f"{a:>9g}" for a in alphas))
    for row in out["classes"]:
        print("  " + f"{row['class']:<16}" + "".join(f"{v:>9.3f}" for v in row["p_mean"]))
    if "random" in out:
        print(f"random directions of the same norm (mean of {res.n_random}):")
        for row in out["random"]["classes"]:
            print("  " + f"{row['class']:<16}" + "".join(f"{v:>9.3f}" for v in row["p_mean"]))
    if args.images:
        for im in images:
            print(f"\n{im['path']}")
            for a, top in zip(alphas, im["top5"]):
                print(f"  alpha {a:g}: " + ", ".join(f"{t['class']} {t['p']:.2%}" for t in top))
    return 0


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _top5(p, names) -> list[dict]:
    order = p.argsort()[::-1][:5]
    return [{"class": names[j], "p": round(float(p[j]), 6)} for j in order]


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")


if __name__ == "__main__":  # pragma: no cover
    from dissect.__main__ import main as cli
    sys.exit(cli(["steer"] + sys.argv[1:]))

