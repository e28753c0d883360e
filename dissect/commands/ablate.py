"""python -m dissect ablate --model M [--weights W] --layer L [--units 3,17 | --concept tree --run RUN]
    [--units LAYER:UNITS ...]   (several layers at once)
    [--mode zero|mean|value=X|scale=X] (--images FILE... | --set toyworld:N | --set folder:DIR)
    [--seed S] [--json] [--rank N]

--images: top-5 before/after per image (and every class whose probability moves).
--set: accuracy and balanced accuracy per class before/after; --rank N adds each class's N most
important units of the layer (each removed alone).
"""
from __future__ import annotations

import argparse
import sys


RANGES = {"rank": (0, 10 ** 9)}    # 0: no importance ranking


def add_parser(sub) -> None:
    p = sub.add_parser("ablate", help="switch units off (or set them) and measure the effect")
    p.add_argument("--model", default=None, help="model name (default: the --run's model)")
    p.add_argument("--weights", default=None,
                   help="none (random init) | ENUM | FILE | URL (default: the --run's weights, "
                        "else the model's trained weights)")
    p.add_argument("--classes", default=None, help="class names file (one per line)")
    p.add_argument("--layer", default=None,
                   help="layer to edit, or several comma-separated with --concept (default: the "
                        "--run's first layer)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--units", action="append", default=None,
                     help="unit list, e.g. 3,17,40-43; repeat as LAYER:UNITS to edit several "
                          "layers at once (--units layer3:5,9 --units layer4:1)")
    who.add_argument("--concept", default=None, help="every unit the --run labels with this concept")
    p.add_argument("--run", default=None, help="run folder (for --concept, unit means, defaults)")
    p.add_argument("--mode", default="zero", help="zero | mean | value=X | scale=X")
    p.add_argument("--invert", action="store_true", help="edit every unit except the chosen ones")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", nargs="+", default=None, metavar="FILE")
    what.add_argument("--set", default=None, help="toyworld:N or folder:DIR (ImageFolder layout)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images of --set")
    p.add_argument("--pair", default=None, metavar="OBJECT",
                   help="toyworld sets: each scene drawn with and without OBJECT")
    p.add_argument("--restyle", default=None, metavar="CONCEPT:STYLE",
                   help="toyworld sets: that concept drawn in another style, e.g. sea:snow")
    p.add_argument("--rank", type=int, default=0, metavar="N",
                   help="with --set: list each class's N most important units")
    p.add_argument("--rank-by", default="balanced", choices=["balanced", "acc", "logit"],
                   help="importance measure: drop in balanced accuracy, accuracy, or true-class logit")
    p.add_argument("--control", default=None, metavar="N,N,...",
                   help="with --set: PNAS control, mean balanced accuracy when removing each "
                        "class's top-N units vs keeping only them, e.g. 1,2,5,10,20")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    from dissect.models.layout import add_layout_options
    add_layout_options(p)
    p.set_defaults(handler=main)


def concept_units(run, layer: str, concept: str) -> list[int]:
    """Units of `layer` the run labels `concept` (IoU at or above the run's threshold)."""
    from dissect.errors import AblationError
    from dissect.interventions.labelled import norm_name
    units = run.units(layer)
    cut = float(run.config.get("iou_threshold", 0.04) or 0.04)
    hit = units[(units["label"].astype(str).map(norm_name) == norm_name(concept))
                & (units["iou"].astype(float) >= cut)]
    if hit.empty:
        common = units[units["iou"].astype(float) >= cut]["label"].value_counts().head(8)
        raise AblationError(f"no unit of {layer} in {run.path} is labelled '{concept}' with IoU >= "
                            f"{cut:g}; labels there: {', '.join(map(str, common.index)) or 'none'}")
    return [int(u) for u in hit["unit"]]


def main(args: argparse.Namespace) -> int:
    import torch
    with torch.no_grad():  # not set_grad_enabled: in-process callers keep their grad mode
        return _ablate(args)


def _ablate(args: argparse.Namespace) -> int:
    import torch
    from dissect.interventions.ablation import (ImageAblation, Intervention, check_units, image_tensor, invert,
                                  means_from_run, parse_mode, parse_units, unit_means)
    from dissect.errors import AblationError
    from dissect.interventions.labelled import evaluate_set, open_labelled_set
    from dissect.models.registry import load_model

    run = None
    if args.run:
        from dissect.runs.folder import open_run
        run = open_run(args.run)
    cfg = run.config if run else {}
    model_name = args.model or cfg.get("model")
    if not model_name:
        raise AblationError("give --model NAME (or --run RUN to use the run's model)")
    same_model = run is not None and (not args.model or args.model == cfg.get("model"))
    weights = args.weights or (cfg.get("weights") if same_model else None)   # None: trained
    layers = [l for l in (args.layer or "").split(",") if l] or (cfg.get("layers") or [])[:1]
    mode, value = parse_mode(args.mode)
    torch.manual_seed(args.seed)
    lm = load_model(model_name, weights, classes=args.classes, device=args.device, seed=args.seed,
                    allow_file=bool(args.model))   # typed by the user, not read from --run
    from dissect.models.layout import layout_from_args, set_layout
    set_layout(lm.model, layout_from_args(args, cfg if same_model else None))
    plan: dict[str, list[int]] = {}
    if args.concept:
        if run is None:
            raise AblationError("--concept needs --run RUN (the dissection that labelled the units)")
        if not layers:
            raise AblationError("give --layer NAME (list them with: python -m dissect layers --model M)")
        plan = {layer: concept_units(run, layer, args.concept) for layer in layers}
    elif args.units:
        for entry in args.units:
            name, sep, text = entry.rpartition(":")
            if not sep:
                if len(layers) != 1:
                    raise AblationError(f"--units {entry}: say which layer, e.g. --layer layer4, "
                                        "or write --units LAYER:UNITS")
                name = layers[0]
            plan.setdefault(name, []).extend(u for u in parse_units(text) if u not in plan.get(name, []))
    elif not args.set:
        raise AblationError("choose units: --units 3,17 or --concept NAME --run RUN "
                            "(with --set and no units: accuracy only)")
    if not plan and (args.units or args.concept or args.invert):
        raise AblationError("give --layer NAME (list them with: python -m dissect layers --model M)")
    from dissect.features.layer import parse_feature_layer
    feature_plan = {k: v for k, v in plan.items() if parse_feature_layer(k) is not None}
    plan = {k: v for k, v in plan.items() if k not in feature_plan}
    if feature_plan and (args.rank or args.control):
        raise AblationError("--rank / --control rank units, not features: give a layer of units")
    layer = next(iter(plan), layers[0] if layers else None)   # the layer --rank/--control use
    if (args.rank or args.control) and layer is None:
        raise AblationError("--rank / --control need a layer: give --layer NAME")
    sizes = {layer_: check_units(lm, layer_, units) for layer_, units in plan.items()}
    if layer is not None and layer not in sizes and parse_feature_layer(layer) is None:
        check_units(lm, layer, [])                          # an unknown --layer: one clear line

    lset = open_labelled_set(args.set, lm, seed=args.seed, limit=args.limit,
                             pair=args.pair, restyle=args.restyle) if args.set else None
    images = []
    if args.images:
        images = [(path, image_tensor(lm, path)) for path in args.images]
    ivs = []
    for name, units in plan.items():
        means = None
        if mode == "mean":
            means = means_from_run(run, name) if run is not None and name in run.layers else None
            if means is None:
                batches = (x for _i, x in lset.batches(args.batch_size)) if lset is not None \
                    else [torch.stack([x for _p, x in images])]
                means = unit_means(lm, name, batches)
        iv = Intervention(name, tuple(units), mode, value, means)
        ivs.append(invert(iv, sizes[name]) if args.invert else iv)
    from dissect.features.ablate import feature_intervention
    ivs += [feature_intervention(run, name, units, mode, value, args.invert)
            for name, units in feature_plan.items()]
    means = ivs[0].means if ivs else None
    info = {"model": lm.name, "weights": lm.weights, "random_init": lm.random_init,
            "layer": ivs[0].layer if ivs else None, "units": list(ivs[0].units) if ivs else [],
            "mode": args.mode,
            "interventions": [{"layer": v.layer, "units": list(v.units)} for v in ivs]}
    title = "; ".join(f"{v.describe()} ({_unit_text(v.units)})" for v in ivs) or "no ablation"
    if lm.random_init:
        print(f"note: {lm.name} has random weights (--weights none): a baseline, not a trained "
              "network", file=sys.stderr)

    if images:
        lab = ImageAblation(lm)
        results = [lab.compare(x, ivs, path=path) for path, x in images]
        if args.json:
            print(_dumps({"images": [r.to_json() for r in results], "intervention": info}))
            return 0
        print(title)
        for r in results:
            print(f"\n{r.path}")
            for (cb, pb), (ca, pa) in zip(r.before, r.after):
                print(f"  {cb:<28} {pb:7.2%}   ->  {ca:<28} {pa:7.2%}")
            moved = ", ".join(f"{c['class']} {c['delta']:+.2%}" for c in r.changes[:5])
            print(f"  {len(r.changes)} classes moved; most: {moved or 'none'}")
        return 0

    res = evaluate_set(lm, lset, ivs, batch_size=args.batch_size)
    out = res.to_json()
    out.update({"intervention": info, "images": len(lset), "skipped": lset.skipped})
    ranks, curve = None, None
    if args.rank or args.control:
        from dissect.interventions.importance import control_curve, rank_units
        imp = rank_units(lm, lset, layer, mode, value, means, batch_size=args.batch_size)
        if args.rank:
            ranks = {lm.class_names[c]: imp.top(c, args.rank, by=args.rank_by) for c in imp.classes}
            out["importance"] = ranks
        if args.control:
            ns = parse_units(args.control)
            curve = control_curve(lm, lset, imp, ns, value, means, args.batch_size, by=args.rank_by)
            out["control"] = curve.to_dict("records")
    if args.json:
        print(_dumps(out))
        return 0
    print(f"{title} on {args.set}: {len(lset)} images"
          + (f", {lset.skipped} skipped" if lset.skipped else ""))
    for note in lset.notes:
        print(f"  note: {note}")
    print(f"accuracy {res.acc_before:.2%} -> {res.acc_after:.2%}")
    df = res.classes.sort_values("class")
    print(f"  {'class':<24} {'n':>5} {'acc before':>11} {'after':>8} {'balanced before':>16} {'after':>8}")
    for r in df.to_dict("records"):
        print(f"  {r['class']:<24} {r['n']:>5} {r['acc_before']:>11.2%} {r['acc_after']:>8.2%} "
              f"{r['balanced_before']:>16.2%} {r['balanced_after']:>8.2%}")
    most = res.most_changed(5)
    print("changed most: " + ", ".join(f"{r['class']} {r['delta']:+.2%}" for _i, r in most.iterrows()))
    if ranks:
        print(f"most important units of {layer} per class (each removed alone, by {args.rank_by}):")
        for name, units_ in ranks.items():
            print(f"  {name:<24} {', '.join(map(str, units_))}")
    if curve is not None:
        print("PNAS control: mean balanced accuracy over classes")
        print(f"  {'N':>5} {'top N removed':>14} {'only top N kept':>16} {'no ablation':>12}")
        for r in curve.to_dict("records"):
            print(f"  {r['n']:>5} {r['removed_top']:>14.2%} {r['kept_top_only']:>16.2%} "
                  f"{r['baseline']:>12.2%}")
    return 0


def _unit_text(units) -> str:
    units = list(units)
    return ("units " + ",".join(map(str, units[:12])) + (f" … ({len(units)})" if len(units) > 12 else ""))


def _dumps(obj) -> str:
    """JSON for stdout: every number finite, or the command fails (dissect.runs.digest)."""
    from dissect.runs.digest import dumps_finite
    return dumps_finite(obj, f"the {__name__.rsplit('.', 1)[-1]} result")


if __name__ == "__main__":  # pragma: no cover
    from dissect.__main__ import main as cli
    sys.exit(cli(["ablate"] + sys.argv[1:]))

