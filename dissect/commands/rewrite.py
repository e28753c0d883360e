"""python -m dissect rewrite --model M --layer L --concept C --style S --exemplars N [--rank 1]
    [--baseline finetune] [--edits FILE] [--world-images 500] --out EDIT --json

Teaches the layer "CONCEPT drawn as STYLE ↦ CONCEPT" with a rank-one update (keys: the layer's
input on the restyled concept; values: its output on the original), then measures % of errors
corrected on held-out restyled ToyWorld scenes (Santurkar et al.'s protocol) beside the
whole-world net effect (every image of unseen world --world-seed, clean and restyled, as
`ablate --set toyworld:N --restyle C:S --seed W` measures) and the clean accuracy. --rank auto:
the rank (1, 2, 4, 8) that wins back the most on a validation world within --clean-budget. Writes
EDIT/weights.safetensors (loadable anywhere as --weights EDIT/weights.safetensors) and
EDIT/edit.json. --edits FILE: several rules at once (MEMIT), one JSON object per line, e.g.
{"concept": "sea", "style": "snow", "exemplars": 3, "class": "beach"}, spread over --layer
L1,L2,...; reports how each rule's held-out accuracy holds as the number of rules grows.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("rewrite", help="rank-one rewrite of a rule into a layer (ROME/MEMIT)",
                       description=__doc__)
    p.add_argument("--model", default="toyworld")
    p.add_argument("--weights", default="default", help="ToyWorld weights (default: trained)")
    p.add_argument("--layer", required=True, help="conv/linear layer or block, e.g. conv6")
    p.add_argument("--concept", default=None, help="the concept to restyle, e.g. sea")
    p.add_argument("--style", default=None, help="snow | wood | gravel | flowers | grayscale")
    p.add_argument("--exemplars", type=int, default=3)
    p.add_argument("--class", dest="exemplar_class", default=None,
                   help="the exemplars' class (default: the first scene with the concept)")
    p.add_argument("--exemplar-index", default=None, metavar="I,J,...",
                   help="exact exemplar images of the exemplar world")
    p.add_argument("--rank", type=_rank, default=1,
                   help="rank of the update (default 1), or auto: the rank that wins back the "
                        "most on a validation world within --clean-budget")
    p.add_argument("--clean-budget", type=float, default=0.005,
                   help="--rank auto: most clean accuracy a rank may lose on the validation "
                        "world (default 0.005)")
    p.add_argument("--baseline", default=None, choices=["finetune"])
    p.add_argument("--finetune-steps", type=int, default=400)
    p.add_argument("--edits", default=None, help="JSON-lines file of rules (MEMIT)")
    p.add_argument("--method", default="memit", choices=["memit", "ranked"],
                   help="with --edits: memit (λC + KKᵀ over the layers) or ranked (--rank ROME "
                        "directions per rule at the first layer, fitted jointly)")
    p.add_argument("--lambda", dest="lam", type=float, default=None,
                   help="MEMIT's λ weight of C (default: the number of keys)")
    p.add_argument("--seed", type=int, default=7, help="exemplar world")
    p.add_argument("--heldout-seed", type=int, default=None, help="default: seed + 1000")
    p.add_argument("--heldout", type=int, default=400, help="held-out images searched")
    p.add_argument("--heldout-styles", default=None, help="comma-separated (default: all)")
    p.add_argument("--probe-images", type=int, default=1000, help="images for the second moment")
    p.add_argument("--probe-seed", type=int, default=0)
    p.add_argument("--world-seed", type=int, default=3000,
                   help="unseen world for the whole-world check (default 3000)")
    p.add_argument("--world-images", type=int, default=500,
                   help="images of that world, clean and restyled (0: skip the check)")
    p.add_argument("--min-cover", type=float, default=0.5,
                   help="keys: output cells the concept covers by at least this share (0-1]")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="folder for weights.safetensors and edit.json")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=main)


def _rank(text: str) -> int:
    """'auto' -> 0 (chosen by held-out gain), else a rank >= 1."""
    if text.strip().lower() == "auto":
        return 0
    try:
        r = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a rank: give 1, 2, ... or "
                                         "auto") from None
    if r < 1:
        raise argparse.ArgumentTypeError(f"{r}: give a rank of at least 1, or auto")
    return r


def _config(args, **over):
    from dissect.editing.rule import RewriteConfig
    idx = None
    if args.exemplar_index:
        from dissect.interventions.ablation import parse_units
        idx = parse_units(args.exemplar_index)
    cfg = RewriteConfig(
        layer=args.layer, concept=args.concept, style=args.style, exemplars=args.exemplars,
        exemplar_class=args.exemplar_class, exemplar_index=idx, rank=args.rank, model=args.model,
        weights=args.weights, seed=args.seed,
        heldout_seed=args.heldout_seed if args.heldout_seed is not None else args.seed + 1000,
        heldout=args.heldout,
        heldout_styles=[s for s in (args.heldout_styles or "").split(",") if s] or None,
        probe_seed=args.probe_seed, probe_images=args.probe_images, baseline=args.baseline,
        finetune_steps=args.finetune_steps, device=args.device, world_seed=args.world_seed,
        world_images=args.world_images, min_cover=args.min_cover, clean_budget=args.clean_budget)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def main(args: argparse.Namespace) -> int:
    from dissect.errors import RewriteError
    from dissect.editing.rule import check_edit_out
    check_edit_out(args.out, args.weights, args.weights, args.overwrite)   # before any work
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    if args.edits:
        from dissect.editing.memit import memit_from_file
        result = memit_from_file(args.edits, _config(args), lam=args.lam, progress=log,
                                 method=args.method)
    else:
        if not args.concept or not args.style:
            raise RewriteError("give --concept and --style (e.g. --concept sea --style snow), "
                               "or --edits FILE")
        from dissect.editing.rule import rewrite
        result = rewrite(_config(args), progress=log)
    from dissect.editing.rule import edit_json, summary, write_edit
    out = write_edit(result, args.out, source_weights=args.weights, overwrite=args.overwrite)
    doc = edit_json(result)
    doc["out"] = str(out)
    doc["weights_file"] = str(out / "weights.safetensors")
    if args.json:
        from dissect.runs.digest import dumps_finite
        print(dumps_finite(doc, "the rewrite's result"))
        return 0
    f = result["figures"]
    print(f"{result['rule']} written into {result.get('weight', result.get('layers'))}; "
          f"clean accuracy {f['clean_acc_before']:.1%} -> {f['clean_acc_after']:.1%}")
    m = result.get("measures") or {}
    if "protocol" in m:
        p = m["protocol"]
        print(f"  protocol (Santurkar et al.): {p['corrected']:.0%} of errors corrected "
              f"({p['errors_before']} -> {p['errors_after']} on {p['images']} held-out images "
              "that show the concept and that the clean model gets right)")
    if "world" in m:
        w = m["world"]
        print(f"  whole unseen world {w['world_seed']} ({w['world_images']} images): "
              f"{w['style_errors_corrected']:.0%} of the style-caused errors corrected; restyled "
              f"{w['restyled']['acc_before']:.1%} -> {w['restyled']['acc_after']:.1%} "
              f"({w['restyled']['corrected']} corrected, {w['restyled']['broken']} broken), clean "
              f"{w['clean']['acc_before']:.1%} -> {w['clean']['acc_after']:.1%} "
              f"({w['clean']['corrected']} corrected, {w['clean']['broken']} broken)")
    if result.get("rank_choice"):
        c = result["rank_choice"]
        print(f"  rank {c['rank']} chosen on validation world {c['validation_world']}: "
              + ", ".join(f"rank {r['rank']} {r['restyled_gain']:+.1%} restyled / "
                          f"{0.0 - r['clean_lost']:+.1%} clean" for r in c["candidates"]))
    if "heldout" in result:
        for method in ("rewrite", "finetune"):
            s = summary(result, method)
            if s:
                print(f"  {method}: % of errors corrected")
                for k, v in s.items():
                    print(f"    {k:<40} {v:>7.0%}" if v == v else f"    {k:<40}     n/a")
    for row in result.get("curve", []):
        print(f"  {row['rules']} rule(s): clean {row['clean_acc']:.1%}, mean corrected "
              f"{row['corrected_mean']:.0%}")
    print(f"  saved {out}/weights.safetensors (use --weights {out}/weights.safetensors)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from dissect.__main__ import main as cli
    sys.exit(cli(["rewrite"] + sys.argv[1:]))
