"""python -m dissect visualize --model M [--weights W] --layer L (--units 0,5-7 | --run RUN --concept C)
    [--basis L@sae512] [--direction DIR] [--method fourier|maco] [--steps 256] [--size 128]
    [--seed 0] [--device cpu|cuda] --out DIR [--json]

One PNG per unit, feature (--basis: decoder rows of RUN/layers/L@sae512/basis.safetensors) or
direction (--direction DIR: a folder saved by `python -m dissect direction`) into DIR, plus
DIR/visualize.json. `--json` prints {"units": [{"unit", "path", "activation", "flat", ...}]}:
activation = the unit's max over positions on the final image (imgmax.npy's statistic); flat =
the optimisation could not raise the objective (a dead or constant unit). Each row also carries
the trust figures: reach (× the best natural image, with --run), stability (two starts), path
score (Geirhos path check, with --run) and a sentence saying them.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("visualize", help="draw the image a unit, feature or direction wants to see")
    p.add_argument("--model", default=None, help="model name (default: the --run's model)")
    p.add_argument("--weights", default=None, help="none | ENUM | FILE (default: trained)")
    p.add_argument("--classes", default=None, help="class names file (one per line)")
    p.add_argument("--layer", required=True, help="the layer (module name) to read units from")
    p.add_argument("--units", default=None, help="units (or features with --basis): 0,5-7")
    p.add_argument("--run", default=None, help="run folder: --concept, --basis, trust figures")
    p.add_argument("--concept", default=None, help="visualise the units the run labels C")
    p.add_argument("--basis", default=None, metavar="L@sae512",
                   help="a feature layer of --run: visualise its decoder rows")
    p.add_argument("--direction", default=None, metavar="DIR", help="a saved direction folder")
    p.add_argument("--cosine", action="store_true",
                   help="directions: maximise the cosine with the direction, not the projection")
    p.add_argument("--method", default="fourier", help="fourier | maco")
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--size", type=int, default=128, help="canvas side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-trust", action="store_true",
                   help="one start per target, no stability or path check (half the work)")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import torch
    from dissect.errors import AblationError, VisualizeError
    from dissect.models.registry import load_model
    from dissect.visualize import VisConfig, draw
    from dissect.visualize import sources as src

    run = None
    if args.run:
        from dissect.runs.folder import open_run
        run = open_run(args.run)
    cfg_run = run.config if run is not None else {}
    model = args.model or cfg_run.get("model")
    if not model:
        raise VisualizeError("give --model NAME (or --run RUN to use the run's model)")
    same = run is not None and (not args.model or args.model == cfg_run.get("model"))
    weights = args.weights or (cfg_run.get("weights") if same else None)
    cfg = VisConfig.published(args.method, steps=args.steps, size=args.size, seed=args.seed,
                              cosine=args.cosine)
    torch.manual_seed(args.seed)
    lm = load_model(model, weights, classes=args.classes, device=args.device, seed=args.seed,
                    allow_file=bool(args.model))
    channels = src.check_request(lm, args.layer, cfg)
    kind, run_layer = "unit", args.layer
    if args.direction:
        targets = src.direction_targets(args.direction, lm, args.layer, channels, args.cosine)
        kind = "direction"
    elif args.basis:
        if run is None:
            raise VisualizeError(f"--basis {args.basis} needs --run RUN (the run that holds "
                                 f"layers/{args.basis}/basis.safetensors)")
        decoder = src.read_basis(run, args.basis)
        feats = _units(args, run, args.basis)
        targets = src.basis_targets(decoder, args.basis, args.layer, channels, feats, args.cosine)
        kind, run_layer = "feature", args.basis
    else:
        units = _units(args, run, args.layer)
        if units is None:
            raise AblationError("choose units: --units 0,5-7 or --run RUN --concept NAME")
        targets = src.unit_targets(units, channels, args.layer)
    if run is not None and run_layer not in run.layers:
        run_use = None               # the run did not dissect this layer: no natural figures
    else:
        run_use = run
    from dissect.runs.marker import prepare_out, stamp
    prepare_out(args.out, "visualisation", overwrite=True, clear=False)   # never into a run
    rows = _draw(lm, args, targets, cfg, run_use, run_layer, kind, draw)
    stamp(args.out, "visualisation")
    from dissect.runs.atomic import write_json
    from pathlib import Path
    write_json(Path(args.out) / "visualize.json",
               {"model": lm.name, "weights": str(lm.weights), "layer": args.layer,
                "basis": args.basis, "direction": args.direction, "run": args.run,
                "config": {k: v for k, v in vars(cfg).items()}, "units": rows})
    if args.json:
        from dissect.runs.digest import dumps_finite
        print(dumps_finite({"units": rows}, "the visualize result"))
    else:
        for r in rows:
            print(f"{kind} {r['unit']}: {r['path']}  activation {r['activation']:.3g}  "
                  f"{r['trust']}")
    return 0


def _units(args, run, layer: str) -> list[int] | None:
    from dissect.interventions.ablation import parse_units
    if args.units:
        return parse_units(args.units)
    if args.concept:
        from dissect.errors import AblationError
        if run is None:
            raise AblationError("--concept needs --run RUN (the dissection that labelled the units)")
        from dissect.commands.ablate import concept_units
        return concept_units(run, layer, args.concept)
    return None


def _draw(lm, args, targets, cfg, run, run_layer, kind, draw):
    from tqdm import tqdm
    bar = tqdm(total=cfg.steps, desc=f"visualising {len(targets)} {kind}(s)", file=sys.stderr,
               disable=None, leave=False)

    def progress(done: int, total: int, _text: str) -> None:
        bar.update(done - bar.n)
    try:
        return draw(lm, args.layer, targets, cfg, args.out, run=run, run_layer=run_layer,
                    kind=kind, trust=not args.no_trust, progress=progress)
    finally:
        bar.close()
