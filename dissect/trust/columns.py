"""The trust columns of units.csv, from one layer's per-image statistics.

    units, arrays = trust_columns(units, sp, iou, cfg, images, concept_cat, n_categories, 0)
    verdict(units.iloc[3])          # "localised detector" | "co-occurs only" | ...

Always `iou_heldout` (label chosen on one held-out half, measured on the other, dissect.probes.splits).
With `cfg.null = B`: `p_value`, `q_value`, `significant` (dissect.trust.nulls association null, BH over
the layer, q ≤ 0.05), `p_method` (permutation, or a tail fit below the permutation floor:
dissect.trust.tail), `p_localised` (roll/flip null), `iou_lo`, `iou_hi`, `label_stability`
(dissect.trust.bootstrap). `arrays` holds the null distributions for null.npz (the app plots them).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dissect.trust.nulls import association_null, benjamini_hochberg, localisation_null, permutation_p
from dissect.probes.splits import heldout_halves
from dissect.trust.per_image import Sparse, best_columns, heldout_iou
from dissect.trust.bootstrap import bootstrap_label
from dissect.trust.tail import floor_q_warning, tail_p

ALPHA = 0.05
NULL_COLUMNS = ("p_value", "q_value", "significant", "p_method", "p_localised", "iou_lo",
                "iou_hi", "label_stability")


def trust_columns(units: pd.DataFrame, sp: Sparse, iou: np.ndarray, cfg,
                  images: pd.DataFrame, concept_cat: np.ndarray, n_categories: int,
                  layer_index: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """units.csv with the trust columns added, and the arrays for null.npz ({} without null).

    Runs on one torch thread: many small products, where more threads only add overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _columns(units, sp, iou, cfg, images, concept_cat, n_categories, layer_index)
    finally:
        torch.set_num_threads(before)


def _columns(units, sp, iou, cfg, images, concept_cat, n_categories, layer_index):
    cc = np.asarray(concept_cat)
    units = units.copy()
    if sp.n >= 2:
        choose, measure = heldout_halves(images, cfg.seed, getattr(cfg, "heldout", "auto"))
        units["iou_heldout"] = heldout_iou(sp, choose, measure, cc, cfg.denominator)
    else:
        units["iou_heldout"] = np.nan
    B = int(getattr(cfg, "null", 0) or 0)
    if not B:
        return units, {}
    rng = np.random.default_rng([int(cfg.seed), 12, int(layer_index)])
    observed, null, iou_img = association_null(sp, cc, cfg.denominator, B, rng)
    p, p_method = tail_p(observed, null)
    q = benjamini_hochberg(p)
    loc_obs, loc_null = localisation_null(sp, cc, cfg.denominator, iou_img, B, rng)
    p_loc = permutation_p(loc_obs, loc_null)
    label_cols = best_columns(iou, cc, n_categories)
    lo, hi, stability = bootstrap_label(sp, iou, label_cols, cc, cfg.denominator, B, rng)
    units["p_value"], units["q_value"], units["p_method"] = p, q, p_method
    units["significant"] = q <= ALPHA
    units["p_localised"] = p_loc
    units["iou_lo"], units["iou_hi"], units["label_stability"] = lo, hi, stability
    arrays = {"observed": observed.astype(np.float32), "null": null.astype(np.float32),
              "loc_observed": loc_obs.astype(np.float32), "loc_null": loc_null.astype(np.float32)}
    return units, arrays


def summary_line(layer: str, units: pd.DataFrame) -> str | None:
    """`conv6 (--null 200): 5 significant (3 localised detectors, 2 co-occur only), 59 not
    distinguishable from chance`; None without the null columns."""
    if "significant" not in units or units["p_value"].isna().all():
        return None
    words = units.apply(verdict, axis=1)
    n_sig = int(units["significant"].astype(bool).sum())
    gpd = int((units.get("p_method", pd.Series(dtype=str)) == "gpd").sum())
    tail = f"; {gpd} p-values from the null's tail" if gpd else ""
    return (f"{layer}: {n_sig} significant ({int((words == 'localised detector').sum())} localised "
            f"detectors, {int((words == 'co-occurs only').sum())} co-occur only), "
            f"{int((words == 'not distinguishable from chance').sum())} not distinguishable from "
            f"chance{tail}")


def layer_warnings(units: pd.DataFrame, draws: int) -> list[str]:
    """Lines to show beside a layer's significance (B too small for BH over its units)."""
    line = floor_q_warning(len(units), draws) if draws else None
    return [line] if line else []


def verdict(row) -> str:
    """One line in words for a unit row with the null columns (or '' without them)."""
    if "significant" not in row or pd.isna(row.get("p_value")):
        return ""
    if not bool(row["significant"]):
        return "not distinguishable from chance"
    if float(row["p_localised"]) <= ALPHA:
        return "localised detector"
    return "co-occurs only"


MIN_NULL = 19
MIN_IMAGES = 20


def check_trust_options(cfg, images: pd.DataFrame) -> None:
    """RunError (one line, naming the fix) for --null and --heldout values that cannot work."""
    from dissect.errors import RunError
    B = int(getattr(cfg, "null", 0) or 0)
    if B and B < MIN_NULL:
        raise RunError(f"--null {B}: with fewer than {MIN_NULL} permutations no p-value can reach "
                       f"0.05; use --null 1000 (or at least --null {MIN_NULL})")
    if B and len(images) < MIN_IMAGES:
        raise RunError(f"--null needs a probe of at least {MIN_IMAGES} images, this one has "
                       f"{len(images)}; use a larger probe (e.g. drop --limit) or leave out --null")
    baseline = getattr(cfg, "baseline", "")
    if baseline not in ("", "rotation", "random-init"):
        raise RunError(f"--baseline {baseline}: use rotation or random-init")
    mode = getattr(cfg, "heldout", "auto")
    if mode not in ("auto", "split", "random"):
        raise RunError(f"--heldout {mode}: use auto, split or random")
    if mode == "split":
        try:
            heldout_halves(images, cfg.seed, "split")
        except ValueError as e:
            raise RunError(str(e)) from None
