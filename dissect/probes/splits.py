"""The held-out split shared by every statistic that chooses on some images and measures on others.

    choose, measure = heldout_halves(run_images_table, seed=0)   # boolean masks over images
    iou_heldout = measure_iou(label_chosen_on(choose), on=measure)

Rule (DESIGN.md, `iou_heldout`): when the probe's own `split` column has both a training split
and a validation split, the label is chosen on the training images and measured on the others;
otherwise a seeded random half of the images chooses and the other half measures. Labels
(`iou_heldout`) and formulas (`formula_iou_heldout`) use this one function so they agree.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN_SPLITS = ("train", "training")
HELDOUT_SPLITS = ("val", "valid", "validation", "test")


def heldout_halves(images: pd.DataFrame | int, seed: int = 0,
                   mode: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (choose, measure) over the probe's images, disjoint, covering all.

    `images` is the run's images table (with a `split` column) or just the number of images.
    `mode`: "auto" (the probe's own split when it has train and val, else a seeded half),
    "split" (the probe's own split; ValueError naming the splits found when it has no second
    one), or "random" (a seeded half, whatever the probe says).
    """
    if mode not in ("auto", "split", "random"):
        raise ValueError(f"held-out mode '{mode}': use auto, split or random")
    n = images if isinstance(images, int) else len(images)
    if n < 2:
        raise ValueError(f"a held-out split needs at least 2 probe images, got {n}")
    if mode != "random" and not isinstance(images, int) and "split" in images.columns:
        split = images["split"].astype(str).str.lower().to_numpy()
        choose = np.isin(split, TRAIN_SPLITS)
        measure = np.isin(split, HELDOUT_SPLITS)
        if choose.any() and measure.any():
            return choose, ~choose
        if mode == "split":
            found = ", ".join(sorted(set(split))) or "none"
            raise ValueError(f"--heldout split: the probe has no train/val split (splits found: "
                             f"{found}); use --heldout random")
    elif mode == "split":
        raise ValueError("--heldout split: the probe has no split column; use --heldout random")
    order = np.random.default_rng(seed).permutation(n)
    choose = np.zeros(n, dtype=bool)
    choose[order[: n // 2]] = True
    return choose, ~choose
