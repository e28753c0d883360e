"""python -m dissect layers --model M [--weights W] [--json]"""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("layers", help="list named modules, their output shapes, dissectable ones")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default=None,
                   help="default (trained) | none (random init) | ENUM | FILE | URL; left out for "
                        "a torchvision, timm: or hf: name, the architecture alone (shapes do not depend on the "
                        "weights, so nothing is downloaded)")
    p.add_argument("--classes", default=None)
    p.add_argument("--size", type=int, default=None, help="input size for the dummy forward")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from dissect.models.registry import PRESETS, is_user_module, list_layers, load_model
    weights = args.weights
    if weights is None and args.model not in PRESETS and not is_user_module(args.model):
        weights = "none"         # torchvision, timm: or hf: name: its layers need no download
    lm = load_model(args.model, weights, classes=args.classes)
    layers = list_layers(lm, args.size)
    if args.json:
        print(_dumps([{"name": l.name, "shape": list(l.shape), "spatial": l.spatial,
                       "layout": l.layout} for l in layers]))
        return 0
    width = max(len(l.name) for l in layers)
    for l in layers:
        mark = "dissectable" if l.spatial and l.layout == "nchw" else \
            (l.layout if l.layout in ("tokens", "nhwc") else "")
        print(f"{l.name:<{width}}  {str(list(l.shape)):<20} {mark}")
    return 0


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")
