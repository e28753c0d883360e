"""Unit detail: a unit's top images with its mask, beside them the image it wants to see (drawn
on demand, studio/vis_view.py), its IoU against every concept, its activation histogram with
the threshold, and previous/next navigation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dissect.runs.render import category_color
from dissect.trust.columns import verdict as trust_verdict
from studio import common, formulas, vis_view
from studio.feature_direction_view import save_section
from studio.feature_links import feature_links_section
from studio.unit_losses import losses_section
from studio.data import (concept_overlay, get_run, concepts_table, iou_threshold, layer_arrays,
                        null_arrays, unit_overlay, units_table)

COLS = 5

ctx = common.need_run()
units = units_table(ctx.path, ctx.layer, ctx.stamp)
arrays = layer_arrays(ctx.path, ctx.layer, ctx.stamp)
n_units = len(units)
unit = st.session_state.get("unit")
if not isinstance(unit, int) or not 0 <= unit < n_units:
    if unit is not None:
        st.warning(f"{ctx.layer} has units 0–{n_units - 1}; unit {unit} does not exist. "
                   "Showing the best unit instead.")
    unit = int(units.loc[units["iou"].idxmax(), "unit"]) if n_units else 0
st.session_state["unit"] = unit
common.set_params(unit=unit)
row = units[units["unit"] == unit].iloc[0]


def _step(d: int) -> None:
    common.set_state(unit=(st.session_state["unit"] + d) % n_units)


def _jump() -> None:
    common.set_state(unit=int(st.session_state["unit_jump"]))


def _p(value: float) -> str:
    """A p- or q-value as shown: below what the tail fit resolves (dissect.trust.tail.MIN_P)
    it reads "< 1e-11", not a precise-looking 1e-12."""
    from dissect.trust.tail import MIN_P
    return f"< {MIN_P * 10:.0e}" if float(value) <= MIN_P * 10 else f"{value:.3g}"


st.title(f"{'Feature' if '@' in ctx.layer else 'Unit'} {unit} · {row['label'] or '—'}")
nav1, nav2, nav3, nav4 = st.columns([1.3, 1.3, 2, 5.4], vertical_alignment="center")
nav1.button("◀ Previous", key="prev_unit", on_click=_step, args=(-1,), width="stretch")
nav2.button("Next ▶", key="next_unit", on_click=_step, args=(1,), width="stretch")
st.session_state["unit_jump"] = unit
nav3.number_input("Unit", 0, max(0, n_units - 1), key="unit_jump", on_change=_jump,
                  label_visibility="collapsed")
with nav4:
    common.page_link("browser", label="Back to the unit browser")

t = iou_threshold(ctx.path, ctx.stamp)
verdict = "interpretable" if row["interpretable"] else f"below the IoU threshold {t:g}"
st.markdown(f"{common.badge(row['category'])} &nbsp; IoU **{row['iou']:.4f}** ({verdict}) "
            f"&nbsp;·&nbsp; threshold T<sub>k</sub> = **{row['threshold']:.4g}** &nbsp;·&nbsp; "
            f"layer `{ctx.layer}` of `{ctx.entry.name}`", unsafe_allow_html=True)
extra = [c[:-6] for c in units.columns if c.endswith("-label")]
if extra:
    bits = [f"{c}: **{row[c + '-label']}** ({row[c + '-iou']:.3f})" for c in extra
            if str(row.get(c + "-label", "")) not in ("", "nan") and c + "-iou" in row]
    if bits:
        st.caption("Best per category — " + " · ".join(bits))
formulas.section(ctx, row, arrays["topk_indices"][unit])

if "p_value" in row and pd.notna(row["p_value"]):
    says = trust_verdict(row)
    st.markdown(f"**Verdict: {says}.** &nbsp; " + {
        "localised detector": "It fires in the images that hold its concept, and where the "
                              "concept is in them.",
        "co-occurs only": "It fires in images that hold its concept, but not where the concept "
                          "is: rolling its map within each image does not lower the overlap.",
        "not distinguishable from chance": "Re-pairing its maps with other images' "
                                           "segmentations matches its best IoU this often.",
    }.get(says, ""))
    m1, m2, m3, m4, m5, m6 = st.columns(6)
    m1.metric("Held-out IoU", f"{row['iou_heldout']:.3f}",
              help="Label chosen on one half of the images, IoU measured on the other")
    m2.metric("95% interval", f"{row['iou_lo']:.2f}–{row['iou_hi']:.2f}",
              help="Image bootstrap of the label's IoU")
    m3.metric("Label stability", f"{row['label_stability']:.0%}"
              if pd.notna(row["label_stability"]) else "—",
              help="Share of bootstrap resamples that keep this label")
    m4.metric("p-value", _p(row["p_value"]),
              help="Image-permutation null of the best IoU over all concepts"
              + ({"gpd": "; below the permutation floor, estimated from the null's tail "
                         "(generalised Pareto fit)",
                  "floor": "; at the permutation floor (no tail fit passed its test)"}
                 .get(str(row.get("p_method", "")), "")))
    m5.metric("q-value", _p(row["q_value"]), help="Benjamini–Hochberg over the layer; "
              "significant at q ≤ 0.05")
    m6.metric("p localised", f"{row['p_localised']:.3g}",
              help="Roll/flip null within each image: small means it finds where the concept is")
    nulls = null_arrays(ctx.path, ctx.layer, ctx.stamp)
    if nulls:
        n1, n2 = st.columns(2)
        for col, key, title in ((n1, "", "Association null (image permutations)"),
                                (n2, "loc_", "Localisation null (rolls and flips)")):
            draws = nulls[f"{key}null"][unit].astype(float)
            fig = px.histogram(x=draws, nbins=40, color_discrete_sequence=["#9aa5b1"])
            fig.add_vline(x=float(nulls[f"{key}observed"][unit]), line_color="#d62728",
                          annotation_text="observed", annotation_position="top left")
            fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), title=title,
                              xaxis_title="best IoU (image-level statistic)" if not key
                              else "best IoU (grid statistic)", yaxis_title="draws")
            col.plotly_chart(fig, key=f"null_{key or 'assoc'}")
elif "iou_heldout" in row and pd.notna(row["iou_heldout"]):
    st.caption(f"Held-out IoU **{row['iou_heldout']:.4f}** (label chosen on one half of the "
               "images, measured on the other). Dissect with `--null` for p-values, an interval "
               "and a verdict.")

indices, values = arrays["topk_indices"][unit], arrays["topk_values"][unit]
k = len(indices)
grid, vis_col = st.columns([4, 1.3])
with vis_col:
    vis_view.section(ctx, unit)
with grid:
    top_l, top_r = st.columns([3, 2], vertical_alignment="bottom")
    top_l.subheader(f"Top {k} images")
    concept_id = int(row["concept"]) if "concept" in row and pd.notna(row.get("concept")) \
        else None
    show_seg = top_r.toggle(f"Show where '{row['label']}' is", key="show_seg",
                            disabled=concept_id is None, help=f"Pixels labelled "
                            f"'{row['label']}' in the probe set, beside each image")
    st.caption("Where the unit's map, upsampled to the image, exceeds T_k the pixels keep their "
               "colour (white outline); the rest is dimmed ×0.2." +
               (" Beside each: the pixels the probe labels with the unit's concept." if show_seg
                else ""))
    per_row = COLS if not show_seg else 3
    for start in range(0, k, per_row):
        cols = st.columns(per_row if not show_seg else per_row * 2)
        for j, rank in enumerate(range(start, min(k, start + per_row))):
            i = int(indices[rank])
            col = cols[j if not show_seg else 2 * j]
            quiet = "" if values[rank] > row["threshold"] else " · below T_k"
            col.image(unit_overlay(ctx.path, ctx.stamp, ctx.layer, unit, rank), width="stretch",
                      caption=(f"#{rank + 1} · image {i}" if show_seg else
                               f"#{rank + 1} · image {i} · max {values[rank]:.3g}") + quiet)
            if show_seg and concept_id is not None:
                cols[2 * j + 1].image(concept_overlay(ctx.path, ctx.stamp, i, concept_id,
                                                      str(row["category"])), width="stretch",
                                      caption=f"'{row['label']}' in {i}")

left, right = st.columns(2)
with left:
    st.subheader("IoU against concepts (top 20)")
    concepts = concepts_table(ctx.path, ctx.stamp)
    ious = np.asarray(arrays["iou"][unit], dtype=float)
    order = np.argsort(-ious)[:20]
    top = pd.DataFrame({"concept": concepts["name"].to_numpy()[order],
                        "category": concepts["category"].to_numpy()[order], "iou": ious[order]})
    fig = px.bar(top[::-1], x="iou", y="concept", color="category", orientation="h",
                 color_discrete_map={c: category_color(c) for c in top.category.unique()})
    fig.add_vline(x=t, line_dash="dash", line_color="#888")
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10), legend_title_text="",
                      yaxis_title=None, xaxis_title="IoU")
    st.plotly_chart(fig, key="iou_bar")
with right:
    st.subheader("Activation histogram")
    if "hist_counts" in arrays:
        edges = arrays["hist_edges"][unit].astype(float)
        counts = arrays["hist_counts"][unit]
        fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts,
                               width=np.diff(edges), marker_color=category_color(row["category"])))
        fig.add_vline(x=float(row["threshold"]), line_dash="dash", line_color="#d62728",
                      annotation_text="T_k", annotation_position="top right")
        fig.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10), yaxis_type="log",
                          xaxis_title="raw activation", yaxis_title="count (log)")
        st.plotly_chart(fig, key="act_hist")
        above = counts[(edges[:-1] + edges[1:]) / 2 > float(row["threshold"])].sum()
        q = get_run(ctx.path, ctx.stamp).config.get("quantile")
        st.caption(f"{above / max(1, counts.sum()):.2%} of this unit's raw activations lie above "
                   f"T_k" + (f" (the run's quantile is {q:g})." if q else "."))
    else:
        st.info("This run kept no activation histogram (hist.npz).")

feature_links_section(ctx.path, ctx.stamp, ctx.layer, unit)
save_section(ctx.path, ctx.stamp, ctx.layer, unit,
             str(row["label"]) if pd.notna(row["label"]) else "")
st.divider()
losses_section(ctx.path, ctx.stamp, ctx.layer, unit)

st.divider()
st.caption("Share this unit: copy the address bar, it carries run, layer and unit.")
links = st.columns(min(k, 6) or 1)
for j in range(min(k, 6)):
    with links[j]:
        common.page_link("image", label=f"Image {int(indices[j])}", image=int(indices[j]))
