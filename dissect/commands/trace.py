"""python -m dissect trace --model M --concept C (--probe P | --set S) [--layers ...]
    [--corrupt noise|blur|gray] [--limit N] [--seed S] [--restyle CONCEPT:STYLE] --json

Causal tracing: the concept's pixels are corrupted in each image that shows it, then one
layer's clean activations are restored (at every position, and at each spatial cell) and the
indirect effect on the image's clean top class, p(restored) − p(corrupted), is measured.
--json: {"images", "p_clean", "p_corrupt", "total_effect", "layers": [{"layer", "effect",
"shape", "grid", "peak", "concentration", ...}]}.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("trace", help="causal tracing: where in the network a concept matters",
                       description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default=None,
                   help="none | ENUM | FILE (default: trained weights for presets, else none)")
    p.add_argument("--classes", default=None)
    p.add_argument("--concept", required=True, help="a pixel-level concept of the probe, e.g. sun")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--probe", default=None, help="broden:DIR | toyworld[:N] (needs masks)")
    src.add_argument("--set", default=None, help="toyworld:N (its concept masks are used)")
    p.add_argument("--layers", "--layer", dest="layers", default=None,
                   help="comma-separated (default: every top-level layer with a spatial output)")
    p.add_argument("--corrupt", default="noise", choices=["noise", "blur", "gray"])
    p.add_argument("--no-cells", action="store_true", help="only restore whole layers")
    p.add_argument("--limit", type=int, default=100, help="at most this many images (100)")
    p.add_argument("--restyle", default=None, metavar="CONCEPT:STYLE",
                   help="toyworld: trace on the restyled scenes, e.g. sea:snow")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="world seed (toyworld) and noise seed")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="also write the JSON, with each image's grids, to FILE (atomically)")
    p.set_defaults(handler=main)


def default_weights(model: str, weights: str | None) -> str:
    from dissect.models.registry import PRESETS
    return weights or ("default" if model in PRESETS else "none")


def default_layers(lm) -> list[str]:
    from dissect.models.registry import list_layers
    return [info.name for info in list_layers(lm) if info.spatial and "." not in info.name]


def main(args: argparse.Namespace) -> int:
    import torch

    from dissect.models.registry import load_model
    from dissect.probes.registry import open_probe
    from dissect.editing.tracing import TraceError, concept_images, trace
    spec = args.probe or args.set
    if args.out:
        from dissect.editing.files import check_trace_out
        check_trace_out(args.out)             # never a folder, never a file trace did not write
    if args.set and not spec.startswith("toyworld"):
        raise TraceError(f"--set {spec} has no concept masks: trace needs --probe broden:DIR or "
                         "a toyworld:N set")
    lm = load_model(args.model, default_weights(args.model, args.weights), classes=args.classes,
                    device=args.device, seed=args.seed)
    layers = [l.strip() for l in (args.layers or "").split(",") if l.strip()] or default_layers(lm)
    opts = {"seed": args.seed}
    if args.restyle:
        opts["restyle"] = args.restyle
    probe = open_probe(spec, **opts)
    x, masks, rows = concept_images(probe, args.concept, limit=args.limit)
    log = (lambda d, n: print(f"traced {d}/{n} images", file=sys.stderr)) if not args.json else None
    with torch.no_grad():
        res = trace(lm, x, masks, layers, corrupt=args.corrupt, seed=args.seed,
                    per_cell=not args.no_cells, batch_size=args.batch_size, progress=log)
    out = res.to_json()
    out.update({"model": lm.name, "weights": lm.weights, "concept": args.concept,
                "corrupt": args.corrupt, "probe": spec, "seed": args.seed,
                "image_rows": [int(r) for r in rows]})
    if args.out:
        from pathlib import Path

        import numpy as np
        full = dict(out, kind="trace", per_image=[
            {"row": int(r), "p_clean": float(res.p_clean[b]), "p_corrupt": float(res.p_corrupt[b]),
             "grids": {l: np.round(res.cells[l][b], 5).tolist() for l in res.cells}}
            for b, r in enumerate(rows)])
        path = Path(args.out)
        from dissect.runs.atomic import write_bytes
        write_bytes(path, _dumps(full).encode())
    if args.json:
        print(_dumps(out))
        return 0
    print(f"{args.concept} corrupted ({args.corrupt}) in {out['images']} images: p(clean top class) "
          f"{out['p_clean']:.3f} -> {out['p_corrupt']:.3f}")
    print(f"  {'layer':<12} {'restore all':>12} {'best cell':>10} {'at':>8} {'on concept':>11}")
    for r in out["layers"]:
        cell = f"{r['max_cell_effect']:>10.3f} {str(tuple(r['peak'])):>8} {r['concentration']:>11.0%}" \
            if "grid" in r else ""
        print(f"  {r['layer']:<12} {r['effect']:>12.3f} {cell}")
    return 0


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")


if __name__ == "__main__":  # pragma: no cover
    from dissect.__main__ import main as cli
    sys.exit(cli(["trace"] + sys.argv[1:]))

