"""The ToyWorld CNN and the ToyWorld ViT on the same unseen world: the README's comparison.

    OMP_NUM_THREADS=1 python benchmarks/toyworld_cnn_vs_vit.py [--only cnn|vit] [--n 400]

For each model: accuracy on world 4242 (600 images); a dissection of every block on world 7
(400 images, all categories), counting the distinct concepts some unit is labelled with at
IoU >= 0.1 per layer; and the PNAS control curve (`ablate --control`) on toyworld:600 of world 7
at the last layer (conv6 for the CNN, blocks.3 for the ViT: both heads max-pool that map).
Everything runs through the public CLI; prints markdown rows.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = {
    "cnn": ("toyworld", ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"], "conv6"),
    "vit": ("toyworld-vit", ["blocks.0", "blocks.1", "blocks.2", "blocks.3"], "blocks.3"),
}
CONTROL = "1,2,4,8,16,32"


def _cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "dissect", *args], cwd=REPO, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=list(MODELS), default=None)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--out", default=None, help="keep the run folders here")
    args = ap.parse_args()
    import torch
    from dissect.models.registry import load_model
    from dissect.runs.folder import open_run
    from dissect.toyworld.train import evaluate
    torch.set_num_threads(1)
    base = Path(args.out or tempfile.mkdtemp(prefix="cnn_vs_vit_"))
    for key in ([args.only] if args.only else list(MODELS)):
        name, layers, ctl = MODELS[key]
        acc, _ = evaluate(load_model(name).model, seed=4242, count=600)
        out = base / key
        _cli("run", "--model", name, "--layer", ",".join(layers), "--probe", f"toyworld:{args.n}",
             "--seed", "7", "--workers", "0", "--quiet", "--overwrite", "--out", str(out))
        run = open_run(out)
        per = []
        for layer in layers:
            u = run.units(layer)
            hit = u[u["iou"] >= 0.1]
            per.append(f"{layer} {hit['label'].nunique()}/{len(u)}")
        print(f"| {name} | accuracy (world 4242, 600) {acc:.1%} | concepts at IoU>=0.1 per layer "
              f"(distinct labels / units): {', '.join(per)} |", flush=True)
        res = json.loads(_cli("ablate", "--model", name, "--layer", ctl, "--set", "toyworld:600",
                              "--seed", "7", "--control", CONTROL, "--json"))
        curve = ", ".join(f"N={r['n']}: removed {r['removed_top']:.2f} / kept {r['kept_top_only']:.2f}"
                          for r in res["control"])
        print(f"| {name} | control at {ctl} (mean balanced acc., baseline "
              f"{res['control'][0]['baseline']:.2f}) | {curve} |", flush=True)
    print(f"run folders: {base}")


if __name__ == "__main__":
    main()
