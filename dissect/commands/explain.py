"""python -m dissect explain RUN [--layer L] [--length 3] [--beam 5] [--null B] [--mentions C]

Compositional explanations (Mu & Andreas 2020): a left-deep formula over concepts (OR, AND,
AND NOT) for every unit, chosen on one half of the images and checked on the other. Adds the
formula columns to layers/<layer>/units.csv and writes layers/<layer>/formulas.json.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="compositional formulas for every unit of a run",
                       description=__doc__)
    p.add_argument("run", help="run folder (made by `python -m dissect run`)")
    add_options(p)
    p.add_argument("--layer", "--layers", dest="layer", default=None,
                   help="comma-separated layers (default: all layers of the run)")
    p.add_argument("--units", default=None, help="only these units, e.g. 3,17")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out half and the null")
    p.add_argument("--mentions", default=None,
                   help="print only units whose formula mentions this concept, e.g. tree")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=main)


def add_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--length, --beam, --null, --heldout, --no-exact (prefixed for `run --explain`)."""
    p.add_argument(f"--{prefix}length", type=int, default=3,
                   help="most concepts in a formula, 1..10 (default 3)")
    p.add_argument(f"--{prefix}beam", type=int, default=5, help="beam width (default 5)")
    if not prefix:
        p.add_argument("--null", type=int, default=0,
                       help="image permutations for formula_p_value (e.g. 5; default 0: none)")
    p.add_argument(f"--{prefix}heldout", default="auto", choices=["auto", "split", "random"],
                   help="held-out half: the probe's train/val split when it has one (auto)")
    p.add_argument(f"--{prefix}no-exact", action="store_true",
                   help="skip the exhaustive check of units whose beam candidates overlap")


def report(summary: dict) -> str:
    """One line per layer for stderr."""
    lines = []
    for layer, s in summary.items():
        kept = s["units"] - s["fallback"]
        share = s["formula_ious_computed"] / max(1, s["formula_ious_naive"])
        lines.append(
            f"{layer}: {kept}/{s['units']} units have a formula that beats their single label "
            f"on {s['heldout_images']} held-out images; exhaustive check on "
            f"{s['exact_checked']} units whose beam candidates overlap found a better formula "
            f"on {s['exact_better']}; formula IoUs computed {s['formula_ious_computed']:,} of "
            f"{s['formula_ious_naive']:,} a naive beam computes ({share:.1%}), {s['seconds']}s")
    return "\n".join(lines)


def summary_line(layer: str, units) -> str:
    """One line: formulas kept vs fallen back, then the trust verdicts (as `run --null` prints
    them), or how to get them: `conv6 formulas: 30 beat their single label on held-out images,
    98 keep it; conv6: 128 significant (125 localised detectors, 3 co-occur only), 0 not
    distinguishable from chance`."""
    from dissect.trust.columns import summary_line as trust_line
    has = units["formula"].astype(str) != "" if "formula" in units else units["unit"] < 0
    fallback = units["formula_fallback"].astype(bool) if "formula_fallback" in units else has
    kept = int((has & ~fallback).sum())
    line = (f"{layer} formulas: {kept} beat their single label on held-out images, "
            f"{int((has & fallback).sum())} keep it")
    if "formula_p_value" in units and units["formula_p_value"].notna().any():
        line += f"; formula_p_value <= 0.05 for {int((units['formula_p_value'] <= 0.05).sum())}"
    trust = trust_line(layer, units)
    return f"{line}; {trust}" if trust else (f"{line}; significance not measured (dissect with "
                                             "--null for p-values)")


def main(args: argparse.Namespace) -> int:
    from dissect.formulas.explain import check_options, explain_run
    from dissect.formulas.grammar import FormulaError, mentions, unknown_concept_message
    from dissect.runs.folder import open_run
    check_options(args.length, args.beam, args.null)
    run = open_run(args.run)
    names = run.concepts["name"].astype(str).tolist() if (run.path / "concepts.csv").exists() \
        else []
    if args.mentions and names and args.mentions not in names:
        raise FormulaError(unknown_concept_message(args.mentions, names))
    layers = [l.strip() for l in args.layer.split(",") if l.strip()] if args.layer else None
    try:
        units = [int(u) for u in args.units.split(",") if u.strip()] if args.units else None
    except ValueError:
        raise FormulaError(f"--units {args.units}: give unit numbers, e.g. 3,17") from None
    summary = explain_run(run.path, layers, args.length, args.beam, args.null, args.seed,
                          units, args.heldout, not args.no_exact, progress=not args.quiet)
    print(report(summary), file=sys.stderr)
    for layer in summary:
        print(summary_line(layer, run.units(layer)), file=sys.stderr)
    if args.json:
        from dissect.runs.digest import dumps_finite
        print(dumps_finite(summary, "the explain summary", indent=1))
        return 0
    for layer in summary:
        df = run.units(layer)
        df = df[df["formula"].astype(str) != ""]
        if args.mentions:
            df = df[[args.mentions in mentions(f, names) for f in df["formula"]]]
        cols = ["unit", "label", "iou", "formula", "formula_iou", "formula_iou_heldout"]
        cols += [c for c in ("formula_p_value",) if c in df]
        print(f"# {layer}")
        print(df[cols].to_string(index=False) if len(df) else "(no units)")
    return 0
