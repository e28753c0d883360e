"""The comparison figures of a layer of units or features (README table, Compare page, --json).

    layer_summary(open_run("runs/toy"), "conv6@sae512")
    # {"unique_concepts": 9, "interpretable": 41, "median_iou": 0.12, "significant": 30, ...}

- unique_concepts: distinct labels among rows with held-out IoU >= 0.1 (`iou_heldout`);
- interpretable: rows whose `interpretable` column is true (IoU >= the run's threshold);
- median_iou: median IoU of the interpretable rows (NaN when there are none);
- significant: interpretable rows whose `significant` is true (None without --null), as the
  Compare page counts them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

HELDOUT_IOU = 0.1


def layer_summary(run, layer: str) -> dict:
    """Counts for one layer of `run` (a dissect.runs.folder.Run)."""
    df = run.units(layer)
    held = df["iou_heldout"].astype(float) if "iou_heldout" in df else df["iou"].astype(float)
    labelled = df.loc[held >= HELDOUT_IOU, "label"].astype(str)
    interp = df["interpretable"].astype(str).str.lower().isin(["true", "1"]) \
        if "interpretable" in df else df["iou"].astype(float) >= 0.04
    ious = df.loc[interp, "iou"].astype(float)
    sig = None
    if "significant" in df:
        sig = int((df["significant"].astype(str).str.lower().isin(["true", "1"]) & interp).sum())
    return {"layer": layer, "rows": int(len(df)),
            "unique_concepts": int(labelled[labelled != ""].nunique()),
            "interpretable": int(interp.sum()),
            "median_iou": round(float(np.median(ious)), 4) if len(ious) else float("nan"),
            "significant": sig}


def comparison_table(run) -> pd.DataFrame:
    """One row per layer of units that has feature layers, then one per feature layer: the
    README / Compare page table (empty when the run has no feature layer)."""
    import json

    from dissect.features.layer import parse_feature_layer
    feats = [l for l in run.layers if parse_feature_layer(l)]
    rows = []
    for base in dict.fromkeys(parse_feature_layer(l)[0] for l in feats):
        if base in run.layers:
            rows.append({**layer_summary(run, base), "method": "units"})
        for name in (l for l in feats if parse_feature_layer(l)[0] == base):
            try:
                info = json.loads((run.layer_dir(name) / "basis.json").read_text())
            except (OSError, ValueError):
                info = {}
            rows.append({**layer_summary(run, name), "method": parse_feature_layer(name)[1],
                         **{k: info.get(k) for k in ("r2", "l0", "dead", "stability")}})
    cols = ["layer", "method", "rows", "unique_concepts", "interpretable", "median_iou",
            "significant", "r2", "l0", "dead", "stability"]
    return pd.DataFrame(rows, columns=cols)
