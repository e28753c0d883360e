"""The app's view of compositional formulas (not a page): the unit-detail section and the
unit browser's "formula mentions" filter.

    formulas.section(ctx, row, indices)          # unit detail: formula beside the label + overlays
    view, note = formulas.filter_mentions(view, "tree", names)

Formulas come from `python -m dissect explain RUN` (or `run ... --explain`): the formula columns
of units.csv, layers/<layer>/formulas.json and the packed concept masks in <run>/labels.npz.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dissect.formulas.grammar import FormulaError, mentions, parse, unknown_concept_message
from dissect.formulas.labels import LabelIndex
from dissect.runs.render import MissingImage, encode, overlay, placeholder, resize_nearest
from studio.data import concepts_table, renderer

EDGE = (0, 200, 255)


@st.cache_resource(max_entries=4, show_spinner=False)
def label_index(run_path: str, stamp: str) -> LabelIndex | None:
    """<run>/labels.npz (written by `explain`), or None."""
    p = Path(run_path) / "labels.npz"
    try:
        return LabelIndex.load(p) if os.path.lexists(p) else None
    except (OSError, KeyError, ValueError):
        return None


def summary(run_path: str, layer: str) -> dict | None:
    from dissect.runs.safe import read_json
    p = Path(run_path) / "layers" / layer / "formulas.json"
    try:
        doc = read_json(p, run_path) if os.path.lexists(p) else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@st.cache_data(max_entries=2048, show_spinner=False)
def formula_overlay(run_path: str, stamp: str, index: int, formula: str) -> bytes:
    """JPEG of probe image `index` with the pixels where `formula` holds kept, the rest dimmed."""
    idx = label_index(run_path, stamp)
    names = concepts_table(run_path, stamp)["name"].astype(str).tolist()
    try:
        img = renderer(run_path, stamp).image(index)
    except MissingImage:
        return encode(placeholder(text="image missing"))
    if idx is None:
        return encode(placeholder(img.shape[:2], "no labels.npz"))
    mask = idx.image_masks(parse(formula, names), [int(index)])[0]
    mask = resize_nearest(mask.astype(np.uint8), img.shape[:2]).astype(bool)
    return encode(overlay(img, mask, edge=EDGE))


def has_formulas(units: pd.DataFrame) -> bool:
    return "formula" in units.columns and (units["formula"].astype(str) != "").any()


def section(ctx, row, indices) -> None:
    """Unit detail: the formula beside the single label, the fallback note, the overlays."""
    formula = str(row.get("formula", "") or "")
    if not formula:
        st.caption("No compositional formula for this layer yet: run "
                   f"`python -m dissect explain {ctx.path} --layer {ctx.layer}`.")
        return
    info = summary(ctx.path, ctx.layer) or {}
    held = info.get("heldout_images")
    fallback = str(row.get("formula_fallback", "")) in ("True", "true", "1")
    st.markdown(f"Formula **`{formula}`** &nbsp; IoU **{float(row['formula_iou']):.4f}** "
                f"&nbsp;·&nbsp; held-out **{float(row['formula_iou_heldout']):.4f}**"
                + (f" &nbsp;·&nbsp; p = {float(row['formula_p_value']):.3g}"
                   if "formula_p_value" in row and pd.notna(row.get("formula_p_value"))
                   and str(row.get("formula_p_value")) != "" else "")
                + f" &nbsp;·&nbsp; beside the single label **{row['label'] or '—'}** "
                  f"(IoU {float(row['iou']):.4f})", unsafe_allow_html=True)
    searched = str(row.get("formula_searched", "") or "")
    if fallback and searched and searched != formula:
        st.info(f"Fell back to the single label: the search's best formula `{searched}` "
                f"(IoU {float(row['formula_searched_iou']):.4f} on all images) did not beat the "
                f"single label on {held or 'the'} held-out images "
                f"({float(row['formula_iou_heldout']):.4f} for the label).", icon="↩️")
    elif fallback:
        st.caption("The formula is the single label: no longer formula did better.")
    exact = str(row.get("formula_exact", "") or "")
    if exact and exact != searched:
        st.caption(f"An exhaustive search over this unit's overlapping concepts found "
                   f"`{exact}` (IoU {float(row['formula_exact_iou']):.4f}).")
    if label_index(ctx.path, ctx.stamp) is None:
        st.caption("labels.npz is missing, damaged or from an older version (no checksum): rerun "
                   "`python -m dissect explain` to rebuild it and draw the formula.")
        return
    if st.toggle("Show where the formula holds on the top images", key="show_formula",
                 value=True):
        n = min(len(indices), 5)
        cols = st.columns(n or 1)
        for j in range(n):
            i = int(indices[j])
            try:
                data = formula_overlay(ctx.path, ctx.stamp, i, formula)
            except FormulaError as e:
                st.warning(str(e))
                return
            cols[j].image(data, width="stretch", caption=f"#{j + 1} · image {i}")
        st.caption("Pixels where the formula holds keep their colour (blue outline); the rest "
                   "is dimmed ×0.2.")


def filter_mentions(view: pd.DataFrame, concept: str, names: list[str]
                    ) -> tuple[pd.DataFrame, str | None]:
    """Units whose formula mentions `concept` (exact name); a message for unknown names."""
    concept = concept.strip()
    if not concept:
        return view, None
    if concept not in names:
        return view.iloc[0:0], unknown_concept_message(concept, names)
    if "formula" not in view.columns:
        return view.iloc[0:0], "this layer has no formulas yet: run `python -m dissect explain`"
    keep = [concept in mentions(str(f), names) for f in view["formula"]]
    return view[keep], None
