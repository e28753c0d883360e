"""Compare runs: detectors per category side by side, unique concepts, IoU distributions, and a
unit-by-unit table of label changes for runs of one model and layer (checkpoints, trained
against random, an edited model). The selection lives in the URL (?sel=run:layer,...)."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dissect.runs.compare import (Item, comparable, format_selection, iou_values, label_changes,
                             overview, parse_selection, per_category)
from studio import common
from studio.data import get_run, stamp

ctx = common.context()
st.title("Compare runs")
st.caption("The classic Network Dissection comparisons: across layers, across networks, "
           "trained against random weights, and over training. Pick layers of complete runs.")

options: dict[str, tuple[str, str]] = {}
for entry in ctx.entries:
    if entry.status != "complete":
        continue
    for layer in common.run_layers(entry):
        options[f"{entry.name}:{layer}"] = (entry.name, layer)
if not options:
    st.info("No complete run yet. " + common.START_HINT.format(root=ctx.root))
    st.stop()

wanted = [f"{r}:{l}" for r, l in parse_selection(st.query_params.get("sel", ""))]
unknown = [w for w in wanted if w not in options]
if unknown:
    st.warning(f"The link asked for {', '.join(unknown)}, which is not a layer of a complete run "
               "here; it is left out.")
default = [w for w in wanted if w in options]
if not default and ctx.entry is not None:     # the current run's layers, or its layer + another run
    default = [k for k, (r, _) in options.items() if r == ctx.entry.name]
    if len(default) < 2:
        default += [k for k, (r, l) in options.items() if r != ctx.entry.name
                    and l == ctx.layer][:1]
chosen = st.multiselect("Runs and layers", list(options), default=default, key="cmp_sel",
                        help="Each entry is run:layer. Two or more make a comparison.")
common.set_params(sel=",".join(chosen) if chosen else None)
if not chosen:
    st.info("Choose two or more run layers above.")
    st.stop()

items = [Item(options[k][0], get_run(str(ctx.root / options[k][0]),
                                     stamp(ctx.root / options[k][0])), options[k][1])
         for k in chosen]
try:
    summary = overview(items)
    per_cat = per_category(items)
except (ValueError, OSError, KeyError) as err:
    st.error(f"A chosen run cannot be read: {err}. Run its `python -m dissect run` again.")
    st.stop()

has_sig = summary["significant"].notna().all()
st.dataframe(summary.drop(columns=["item"] + ([] if has_sig else ["significant"])), hide_index=True, column_config={
    "median_iou": st.column_config.NumberColumn("median IoU", format="%.3f"),
    "unique_concepts": st.column_config.NumberColumn("unique concepts"),
    "threshold": st.column_config.NumberColumn("IoU ≥", format="%.2f"),
    "significant": st.column_config.NumberColumn(
        "significant", help="interpretable units whose label survives the image-permutation "
                            "null (q ≤ 0.05); needs runs made with --null"),
})
if summary["threshold"].nunique() > 1:
    st.warning("The runs use different IoU thresholds; the counts are not directly comparable.")

left, right = st.columns(2)
with left:
    measure = "interpretable"
    if has_sig:
        measure = st.radio("Count", ["interpretable", "significant"], horizontal=True,
                           key="cmp_measure")
    st.subheader(f"{measure.capitalize()} units per category")
    fig = px.bar(per_cat, x="category", y=measure, color="item", barmode="group", text=measure,
                 labels={"item": "run:layer", measure: "units"})
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), legend_title_text="")
    st.plotly_chart(fig, key="cmp_per_category")
with right:
    st.subheader("Unique concepts")
    fig = px.bar(summary, x="item", y="unique_concepts", text="unique_concepts",
                 labels={"item": "run:layer", "unique_concepts": "unique concepts"})
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(fig, key="cmp_unique")

st.subheader("IoU of every unit's best label")
values = iou_values(items)
fig = px.histogram(values, x="iou", color="item", barmode="overlay", opacity=0.55, nbins=50,
                   histnorm="percent", labels={"item": "run:layer", "iou": "best IoU"})
for t in sorted(summary["threshold"].unique()):
    fig.add_vline(x=t, line_dash="dash", line_color="#888", annotation_text=f"IoU {t:g}")
fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10), legend_title_text="",
                  yaxis_title="% of units")
st.plotly_chart(fig, key="cmp_iou")

pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1:] if comparable(a, b)]
changes = pd.DataFrame()
st.subheader("Label changes, unit by unit")
if not pairs:
    st.caption("Choose two layers of the same model and layer name (checkpoints, trained against "
               "random, an edited model) to see which units gained, lost or changed their label.")
else:
    names = [f"{a.key} → {b.key}" for a, b in pairs]
    pick = st.selectbox("Pair", names, key="cmp_pair") if len(pairs) > 1 else names[0]
    a, b = pairs[names.index(pick)]
    changes = label_changes(a, b)
    counts = changes["change"].value_counts()
    cols = st.columns(4)
    for col, kind in zip(cols, ["same", "relabelled", "gained", "lost"]):
        col.metric(kind, int(counts.get(kind, 0)))
    only = st.toggle("Only units whose label changed", value=True, key="cmp_only_changed")
    show = changes[changes["change"] != "same"] if only else changes
    st.dataframe(show, hide_index=True, height=320, column_config={
        "label_a": f"label in {a.key}", "label_b": f"label in {b.key}",
        "iou_a": st.column_config.NumberColumn(f"IoU in {a.key}", format="%.3f"),
        "iou_b": st.column_config.NumberColumn(f"IoU in {b.key}", format="%.3f"),
    })
    st.caption("A label counts when its IoU reaches the run's threshold; '' means none does.")

c1, c2 = st.columns(2)
c1.download_button("Download the comparison (CSV)",
                   per_cat.merge(summary, on=["run", "layer", "item"], suffixes=("", "_layer"))
                   .to_csv(index=False).encode(), file_name="compare.csv", mime="text/csv",
                   key="cmp_csv", icon=":material/download:")
if not changes.empty:
    c2.download_button("Download the label changes (CSV)", changes.to_csv(index=False).encode(),
                       file_name="label_changes.csv", mime="text/csv", key="cmp_changes_csv",
                       icon=":material/download:")
if ctx.entry is not None:          # units vs dictionary features of the current run
    from dissect.features.summary import comparison_table
    table = comparison_table(get_run(str(ctx.entry.path), stamp(ctx.entry.path)))
    if len(table):
        st.subheader(f"Units vs dictionary features · {ctx.entry.name}")
        st.caption("unique concepts at held-out IoU ≥ 0.1; R² on held-out positions, L0 = mean "
                   "active features per position, stability = Hungarian cosine between two seeds")
        st.dataframe(table, hide_index=True, key="cmp_features")
st.caption(f"Share this comparison: ?sel={format_selection(items)}")
