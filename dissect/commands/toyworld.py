"""python -m dissect toyworld {train,build,eval}: the embedded probe world and its model.

    python -m dissect toyworld train                  # the recipe of the committed weights
    python -m dissect toyworld train --arch vit       # the recipe of the committed ViT weights
    python -m dissect toyworld train --images 48000 --epochs 3 [--init W] --out FILE  # 1 stage
    python -m dissect toyworld build --n 1000 --seed 0 --out DIR     # a Broden-format world
    python -m dissect toyworld eval [--weights default] --seed 7 --n 2000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("toyworld", help="build the ToyWorld probe set, train or evaluate its model")
    tw = p.add_subparsers(dest="toyworld_command", required=True)

    t = tw.add_parser("train", help="train the scene classifier (reproducible, seeded)",
                      description="Without --images/--epochs/--lr/--seed/--init: the 3-stage "
                      "recipe of the committed weights. With any of them: one stage.")
    t.add_argument("--arch", choices=("cnn", "vit"), default="cnn",
                   help="cnn (--model toyworld) or vit (--model toyworld-vit)")
    t.add_argument("--images", type=int, default=None, help="distinct training images (48000)")
    t.add_argument("--epochs", type=int, default=None, help="epochs (3)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=None, help="one-cycle peak (3e-3)")
    t.add_argument("--seed", type=int, default=None, help="training world and torch seed (0)")
    t.add_argument("--eval-seed", type=int, default=1000, help="held-out world")
    t.add_argument("--eval-images", type=int, default=2000)
    t.add_argument("--workers", type=int, default=None, help="generation processes (2)")
    t.add_argument("--threads", type=int, default=None, help="torch threads (2)")
    t.add_argument("--shift", type=int, default=8, help="max random translation (px at 112)")
    t.add_argument("--init", default=None, help="start from these weights (a second stage)")
    t.add_argument("--out", default=None, help="weights file (default: the packaged weights)")

    b = tw.add_parser("build", help="write a Broden-format world of N images")
    b.add_argument("--n", type=int, default=1000)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="directory to create")
    b.add_argument("--workers", type=int, default=2)

    e = tw.add_parser("eval", help="accuracy of a ToyWorld model on a world of N images")
    e.add_argument("--arch", choices=("cnn", "vit"), default="cnn")
    e.add_argument("--weights", default="default")
    e.add_argument("--seed", type=int, default=1000)
    e.add_argument("--n", type=int, default=2000)
    e.add_argument("--json", action="store_true")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    return {"train": _train, "build": _build, "eval": _eval}[args.toyworld_command](args)


def _train(args: argparse.Namespace) -> int:
    from dissect.toyworld.model import DEFAULT_WEIGHTS
    from dissect.toyworld.train import RECIPE, VIT_RECIPE, TrainConfig, train, train_recipe
    from dissect.toyworld.vit import DEFAULT_VIT_WEIGHTS
    vit = args.arch == "vit"
    out = Path(args.out) if args.out else (DEFAULT_VIT_WEIGHTS if vit else DEFAULT_WEIGHTS)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if all(v is None for v in (args.images, args.epochs, args.lr, args.seed, args.init)):
        train_recipe(VIT_RECIPE if vit else RECIPE, out, log=log, workers=args.workers,
                     threads=args.threads)
        return 0
    base = VIT_RECIPE[0] if vit else TrainConfig()
    cfg = TrainConfig(images=args.images or base.images, epochs=args.epochs or base.epochs,
                      batch_size=args.batch_size, lr=args.lr or base.lr, seed=args.seed or 0,
                      weight_decay=base.weight_decay, arch=args.arch,
                      eval_seed=args.eval_seed, eval_images=args.eval_images,
                      workers=args.workers or base.workers, threads=args.threads or base.threads,
                      shift=args.shift, init=args.init)
    if cfg.images // cfg.batch_size * cfg.epochs < 10:
        print(f"error: --images {cfg.images} x --epochs {cfg.epochs} gives fewer than 10 "
              f"batches of {cfg.batch_size}; use more images or a smaller --batch-size",
              file=sys.stderr)
        return 2
    train(cfg, out, log=log)
    return 0


def _build(args: argparse.Namespace) -> int:
    from dissect.toyworld.broden_writer import build_world
    out = build_world(Path(args.out), args.n, seed=args.seed, workers=args.workers,
                      progress=lambda d, n: print(f"\rbuilt {d}/{n} images", end="",
                                                  file=sys.stderr, flush=True))
    print(f"\nwrote {args.n} images to {out}", file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from dissect.toyworld.model import load_toyworld
    from dissect.toyworld.train import evaluate
    from dissect.toyworld.vit import load_toyworld_vit
    lm = (load_toyworld_vit if args.arch == "vit" else load_toyworld)(args.weights, "cpu")
    acc, per = evaluate(lm.model, args.seed, args.n)
    if args.json:
        per = {k: (v if v == v else None) for k, v in per.items()}   # null: no image of it
        print(_dumps({"accuracy": acc, "seed": args.seed, "images": args.n, "per_class": per}))
    else:
        print(f"accuracy {acc:.4f} on {args.n} images of world seed {args.seed}")
        for name, a in per.items():
            print(f"  {name:<8} {a:.3f}")
    return 0


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")
