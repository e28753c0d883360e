"""python -m dissect features RUN --layer L --method pca|nmf|sae [--k K] [--topk T] [--seed S]
    [--images N] [--device cpu|cuda] [--null B] [--overwrite] [--json]

Learn a dictionary of the layer's features from the run's kept activations (every image
position is one sample; fitted on the probe's training half) and dissect the features exactly
as units: writes RUN/layers/L@<method><K>/ (units.csv, iou.npy, topk.npz, imgmax.npy, ...,
basis.safetensors, basis.json). --json prints basis.json's figures and, for the features and
the layer's own units, the interpretable and unique-concept counts.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("features", help="fit PCA/NMF/SAE features of a layer and dissect them",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (made by `python -m dissect run`, with acts kept)")
    p.add_argument("--layer", required=True, help="a layer of the run, e.g. conv6")
    p.add_argument("--method", default="sae", help="pca, nmf or sae (default sae: TopK SAE)")
    p.add_argument("--k", type=int, default=None,
                   help="features (default: 4x channels for sae, channels for pca, 32 for nmf)")
    p.add_argument("--topk", type=int, default=None, help="sae: codes per position (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the fit")
    p.add_argument("--images", type=int, default=None,
                   help="fit on at most N images of the training half (default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the fit and the codes)")
    p.add_argument("--null", type=int, default=None,
                   help="permutations for the trust columns (default: the run's own --null)")
    p.add_argument("--steps", type=int, default=0, help="sae: training steps (default 1500)")
    p.add_argument("--no-acts", action="store_true",
                   help="do not keep the features' code maps (acts.npy; explain needs them)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing feature layer")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from dissect.features.layer import features_layer
    from dissect.features.summary import layer_summary
    from dissect.errors import FeatureError
    from dissect.runs.folder import open_run
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise FeatureError("--device cuda: no CUDA device is visible here; use --device cpu")
    if args.images is not None and args.images < 1:
        raise FeatureError(f"--images {args.images}: use at least 1 image")
    out = features_layer(args.run, args.layer, args.method, args.k, args.topk, args.seed,
                         args.images, args.device, args.null, args.overwrite,
                         keep_acts=not args.no_acts, progress=not args.quiet, steps=args.steps)
    run = open_run(args.run)
    out["features"] = layer_summary(run, out["layer"])
    out["units"] = layer_summary(run, args.layer)
    f, u = out["features"], out["units"]
    print(f"{out['layer']}: R² {out['r2']:.3f} on held-out positions, L0 {out['l0']:.2f}, "
          f"{out['dead']} dead, stability {out['stability']:.3f}; {f['unique_concepts']} unique "
          f"concepts at held-out IoU ≥ 0.1 ({u['unique_concepts']} for the units), "
          f"{f['interpretable']} interpretable features ({u['interpretable']} units) -> "
          f"{out['path']}", file=sys.stderr)
    if args.json:
        from dissect.runs.digest import dumps_finite
        print(dumps_finite(out, "the features result", indent=1, default=str))
    return 0
