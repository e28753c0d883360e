"""Many rules at once at a realistic size: 12 rules (concept x style) written into conv6, added
one by one; each rule's held-out accuracy as the rules grow (ToyWorld CNN, CPU, 1 thread).

    python benchmarks/bench_memit.py [--rules 12] [--layers conv6] [--exemplars 3]
        [--heldout 120] [--world-images 300] [--method ranked | memit [--lambda-scale S]]

--method ranked (default): one ROME direction per rule (--rank per rule), fitted jointly at
the first layer; --method memit: MEMIT's ΔW = R Kᵀ (λC + KKᵀ)⁻¹ over --layers, λ = S x keys.
Per rule, accuracy on held-out restyled scenes of world 1007 that show the concept and that
the clean model gets right (Santurkar et al.'s population; "before" = the unedited model), with
the first 1, 2, ... rules written; a rule not yet written shows how the others' edits move it.
Then, for all rules written, the whole-world figure per rule (dissect.editing.world: unseen world
3000, clean and restyled, as `ablate --set toyworld:N --restyle C:S --seed 3000` measures).
Exemplars of each rule: the first images of world 7 of the first scene with the concept (of any
class where that scene has too few) where the concept covers >= 4% of the image. Printed as
fractions, not times.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

# concept x style pairs whose restyle costs the unedited model the most held-out accuracy
# (among the concepts that cover >= 4% of enough images to give exemplars)
RULES = ["sea:snow", "road:snow", "house:snow", "mountain:snow", "cloud:wood", "car:snow",
         "sea:wood", "road:flowers", "house:flowers", "cloud:flowers", "mountain:flowers",
         "house:gravel"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=12)
    ap.add_argument("--layers", default="conv6")
    ap.add_argument("--exemplars", type=int, default=3)
    ap.add_argument("--heldout", type=int, default=120)
    ap.add_argument("--world-images", type=int, default=300)
    ap.add_argument("--lambda", dest="lam", type=float, default=None)
    ap.add_argument("--method", default="ranked", choices=["memit", "ranked"],
                    help="ranked: one ROME direction per rule, fitted jointly (first layer)")
    ap.add_argument("--rank", type=int, default=1, help="--method ranked: directions per rule")
    ap.add_argument("--class", dest="cls", default=None,
                    help="exemplars' class for every rule (default: the first scene with the "
                         "concept, else any)")
    ap.add_argument("--lambda-scale", type=float, default=1.0,
                    help="λ = this x the number of keys (when --lambda is not given)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    from dissect.editing.rule import RewriteConfig
    from dissect.editing.memit import memit
    from dissect.editing.world import world_effect
    from dissect.toyworld.model import load_toyworld
    from dissect.errors import RewriteError
    from dissect.editing.evaluation import exemplars
    rules = []
    for r in RULES[:args.rules]:
        c, s = r.split(":")
        rule = {"concept": c, "style": s, "exemplars": args.exemplars}
        if args.cls:
            rule["class"] = args.cls
        else:
            try:
                exemplars(c, s, args.exemplars, seed=7)
            except RewriteError:            # too few large enough in its first scene
                rule["class"] = "any"
        rules.append(rule)
    layers = args.layers.split(",")
    cfg = RewriteConfig(layer=args.layers, heldout=args.heldout)
    lm = load_toyworld()
    res = memit(cfg, rules, layers, lam=args.lam, lm=lm, lam_scale=args.lambda_scale,
                method=args.method, rank=args.rank)
    names = [f"{r['concept']}:{r['style']}" for r in rules]
    lam = f"λ = {args.lam:g}" if args.lam else f"λ = {args.lambda_scale:g} x keys"
    if args.method == "ranked":
        layers, lam = layers[:1], f"{args.rank} ROME direction(s) per rule, fitted jointly"
    print(f"MEMIT over {', '.join(layers)}, {lam}, {args.exemplars} exemplars per rule; per rule: "
          f"held-out accuracy on restyled scenes (images the clean model gets right)")
    print(f"{'rules':>5} {'clean':>6} {'mean corr':>9} " + " ".join(f"{n[:11]:>11}" for n in names))
    first = res["curve"][0]["per_rule"]
    print(f"{'0':>5} {res['figures']['clean_acc_before']:>6.1%} {'':>9} "
          + " ".join(f"{p['acc_before']:>11.0%}" for p in first))
    for row in res["curve"]:
        cells = [f"{p['acc_after']:>10.0%}{'*' if p['applied'] else ' '}" for p in row["per_rule"]]
        print(f"{row['rules']:>5} {row['clean_acc']:>6.1%} {row['corrected_mean']:>9.0%} "
              + " ".join(cells))
    print("(* = rule written; mean corr = mean % of errors corrected over the rules written)")
    if args.world_images:
        print(f"\nall {len(rules)} rules written; unseen world 3000 ({args.world_images} images), "
              "clean and restyled per rule, as ablate --set --restyle measures:")
        print(f"{'rule':<16} {'restyled before':>15} {'after':>7} {'style errors corr':>18} "
              f"{'corrected':>9} {'broken':>7}")
        clean = None
        for n in names:
            c, s = n.split(":")
            w = world_effect(lm, res["model"], c, s, args.world_images, 3000)
            clean = w["clean"]
            r = w["restyled"]
            print(f"{n:<16} {r['acc_before']:>15.1%} {r['acc_after']:>7.1%} "
                  f"{w['style_errors_corrected']:>18.0%} {r['corrected']:>9} {r['broken']:>7}")
        print(f"{'clean world':<16} {clean['acc_before']:>15.1%} {clean['acc_after']:>7.1%} "
              f"{'':>18} {clean['corrected']:>9} {clean['broken']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
