"""Layer overview: how many units are interpretable, for which concepts, across layers."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dissect.runs.render import category_color
from studio import common
from dissect.trust.baselines import baseline_counts
from studio.data import get_run, iou_threshold, layer_summary, units_table

ctx = common.need_run()
units = units_table(ctx.path, ctx.layer, ctx.stamp)
t = iou_threshold(ctx.path, ctx.stamp)
interp = units[units.interpretable]
n, m, k = len(interp), len(units), interp["label"].nunique()

st.title(f"{ctx.entry.name} · {ctx.layer}")
significant = units["significant"].astype(bool) if "significant" in units else None
st.markdown(f"#### {n} of {m} units interpretable, covering {k} concepts, IoU ≥ {t:g}"
            + ("" if significant is None else
               f" · {int(significant.sum())} significant (q ≤ 0.05), "
               f"{int((units.interpretable & significant).sum())} of them interpretable"))
if significant is not None:
    from dissect.trust.columns import layer_warnings
    at_floor = "p_method" in units and (units["p_method"] == "floor").any()
    for line in layer_warnings(units, int(get_run(ctx.path, ctx.stamp).config.get("null") or 0)):
        if at_floor:        # a tail fit was refused: those units cannot reach q ≤ 0.05
            st.warning(line, icon="⚠️")
        else:               # every p below the floor came from a tail fit: a note, not an alarm
            st.caption(line)
if n == 0:
    st.info(f"No unit of {ctx.layer} reaches IoU {t:g}. Untrained (random) weights give this; "
            "the charts below still show every unit's best match.")
c1, c2, c3, c4 = st.columns(4)
c1.metric(f"Interpretable units ({100 * n / max(1, m):.0f}%)", f"{n} / {m}")
c2.metric("Distinct concepts", k)
c3.metric("Median IoU (interpretable)", f"{interp['iou'].median():.3f}" if n else "—")
if m:
    best_row = units.loc[units["iou"].idxmax()]
    c4.metric(f"Best unit: {int(best_row['unit'])} · {best_row['label']}",
              f"{best_row['iou']:.3f}")

baselines = baseline_counts(get_run(ctx.path, ctx.stamp), ctx.layer)
if baselines:
    names = {"rotation": "randomly rotated unit basis", "random-init": "same network, random weights"}
    b_cols = st.columns(len(baselines) + 1)
    b_cols[0].metric("This layer", f"{n} / {m}", f"{k} concepts", delta_color="off",
                     help="Interpretable units and their distinct concepts")
    for col, (name, c) in zip(b_cols[1:], baselines.items()):
        col.metric(f"Baseline: {names.get(name, name)}", f"{c['interpretable']} / {c['units']}",
                   f"{c['unique']} concepts", delta_color="off",
                   help="The same counts for the baseline (Bau et al. 2017): --baseline " + name)

cats = sorted(units["category"].unique())
colors = {c: category_color(c) for c in cats}
left, right = st.columns(2)
with left:
    st.subheader("Interpretable units per category")
    per = interp.groupby("category").size().reindex(cats, fill_value=0).reset_index(name="units")
    fig = px.bar(per, x="category", y="units", color="category", color_discrete_map=colors,
                 text="units")
    fig.update_layout(showlegend=False, height=320, margin=dict(l=10, r=10, t=10, b=10),
                      yaxis_rangemode="tozero")
    st.plotly_chart(fig, key="per_category")
with right:
    st.subheader("Best IoU of every unit")
    fig = px.histogram(units, x="iou", color="category", color_discrete_map=colors, nbins=40)
    fig.add_vline(x=t, line_dash="dash", line_color="#888",
                  annotation_text=f"IoU {t:g}", annotation_position="top right")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), bargap=0.05,
                      legend_title_text="", barmode="stack")
    st.plotly_chart(fig, key="iou_hist")

left, right = st.columns([3, 2])
with left:
    st.subheader("Concepts")
    st.caption("Units whose best label is each concept: interpretable ones (IoU ≥ t) and all. "
               "Select a row to browse its units.")
    labelled = units[units["label"] != ""]
    table = (labelled.groupby(["label", "category"])
             .agg(units=("interpretable", "sum"), labelled=("unit", "size"),
                  best_iou=("iou", "max"), mean_iou=("iou", "mean"),
                  best_unit=("iou", lambda s: int(labelled.loc[s.idxmax(), "unit"])))
             .reset_index().sort_values(["units", "best_iou"], ascending=False))
    sel = st.dataframe(
        table, hide_index=True, key="concepts", on_select="rerun", selection_mode="single-row",
        height=360,
        column_config={
            "label": "concept",
            "units": st.column_config.ProgressColumn(
                "units", format="%d", min_value=0, max_value=max(1, int(table["units"].max()) if len(table) else 1)),
            "labelled": st.column_config.NumberColumn("all labelled", format="%d"),
            "best_iou": st.column_config.NumberColumn("best IoU", format="%.3f"),
            "mean_iou": st.column_config.NumberColumn("mean IoU", format="%.3f"),
            "best_unit": st.column_config.NumberColumn("best unit", format="%d"),
        })
    rows = sel.selection.rows if sel is not None and hasattr(sel, "selection") else []
    if rows:
        concept = table.iloc[rows[0]]["label"]
        common.go("browser", q=concept)
with right:
    st.subheader("Layers of this run")
    summary = layer_summary(ctx.path, ctx.stamp)
    if summary.empty:
        every = pd.concat([units_table(ctx.path, l, ctx.stamp).assign(layer=l)
                           for l in ctx.layers])
        fig = px.box(every, x="layer", y="iou", points=False,
                     category_orders={"layer": ctx.layers})
        fig.add_hline(y=t, line_dash="dash", line_color="#888")
        fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="best IoU")
        st.plotly_chart(fig, key="layers_cmp")
        st.caption("No interpretable units in any layer: best IoU of every unit, per layer.")
    else:
        fig = px.bar(summary, x="layer", y="units", color="category", color_discrete_map=colors
                     | {c: category_color(c) for c in summary.category.unique()},
                     category_orders={"layer": ctx.layers}, barmode="stack")
        fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), legend_title_text="")
        st.plotly_chart(fig, key="layers_cmp")
    st.caption("Interpretable units per category in each dissected layer.")

st.divider()
a, b, c = st.columns(3)
with a:
    common.page_link("browser", label="Browse the units of this layer")
with b:
    best = int(units.loc[units["iou"].idxmax(), "unit"]) if m else 0
    common.page_link("unit", label=f"Open the best unit ({best})", unit=best)
with c:
    common.page_link("image", label="Look at probe images")
