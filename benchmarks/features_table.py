"""The README's units-vs-features table: ToyWorld conv5 and conv6, units vs PCA vs NMF vs SAE.

    python benchmarks/features_table.py [--images 2000] [--null 100] [--out .cache/feat_table]

One dissection of the trained ToyWorld CNN (layers conv5, conv6) on `--images` images of world
seed 7 (`--seed 7`; the model trained on worlds 0-2 and was evaluated on 1000), with `--null` permutations,
then `python -m dissect features` for pca (K = C), nmf (K = 32) and sae (K = 4C, topk 8) on
each layer, fitted on the probe's training half. Prints a Markdown table (dissect.features
.summary): unique concepts at held-out IoU >= 0.1, interpretable count, median IoU of the
interpretable rows, significant with --null, and R², L0, dead, stability for the features.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--null", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / ".cache" / "feat_table"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from dissect.__main__ import main as cli
    from dissect.features.summary import layer_summary
    from dissect.runs.folder import open_run
    out = Path(args.out)
    t = time.perf_counter()
    assert cli(["run", "--model", "toyworld", "--layer", "conv5,conv6", "--probe",
                f"toyworld:{args.images}", "--seed", "7", "--null", str(args.null),
                "--batch-size", "50", "--workers", "1", "--quiet", "--device", args.device,
                "--out", str(out)]) == 0
    print(f"dissection: {time.perf_counter() - t:.0f}s", file=sys.stderr)
    rows = []
    run = open_run(out)
    for layer in ("conv5", "conv6"):
        c = int(run.info["counts"]["units"][layer])
        rows.append({**layer_summary(run, layer), "method": "units", "k": c})
        for method, k in (("pca", c), ("nmf", 32), ("sae", 4 * c)):
            t = time.perf_counter()
            name = f"{layer}@{method}{k}"
            if not (out / "layers" / name).exists():
                assert cli(["features", str(out), "--layer", layer, "--method", method,
                            "--k", str(k), "--device", args.device, "--quiet"]) == 0
            info = json.loads((out / "layers" / name / "basis.json").read_text())
            print(f"{name}: {time.perf_counter() - t:.0f}s", file=sys.stderr)
            rows.append({**layer_summary(open_run(out), name), "method": method, "k": k,
                         **{key: info[key] for key in ("r2", "l0", "dead", "stability")}})
    print("| layer | rows | unique concepts (held-out IoU ≥ 0.1) | interpretable | median IoU "
          "| significant | R² | L0 | dead | stability |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda key, fmt="{:.3f}": fmt.format(r[key]) if key in r else "–"
        print(f"| {r['layer']} | {r['rows']} {r['method']} | {r['unique_concepts']} | "
              f"{r['interpretable']} | {r['median_iou']:.3f} | {r['significant']} | {f('r2')} | "
              f"{f('l0', '{:.1f}')} | {f('dead', '{}')} | {f('stability')} |")


if __name__ == "__main__":
    main()
