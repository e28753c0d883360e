"""Unit browser: filter and sort a layer's units, see their top images, open or ablate them."""
from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from studio import common, formulas, nav, urlstate
from studio.urlstate import Field
from dissect.visualize.cache import cache_dir, cached_units
from studio.data import get_run, unit_strip, units_table

PER_PAGE = 24
COLS = 4

ctx = common.need_run()
units = units_table(ctx.path, ctx.layer, ctx.stamp)
st.title(f"Units of {ctx.layer}")
st.caption(f"{ctx.entry.name} · {len(units)} units · top images with the unit's mask "
           "(pixels outside it dimmed ×0.2)")

cats = sorted(units["category"].unique())
labels = sorted(l for l in units["label"].unique() if l)
hi = float(max(0.01, round(units["iou"].max() + 0.005, 3)))
trust = "significant" in units.columns        # a --null run (dissect.trust.columns)
SORTS = ["IoU ↓", "unit ↑", "label", "category"] + (["p-value ↑"] if trust else [])
FIELDS = [Field("sig", "browser_sig", False, "bool"), Field("cat", "browser_cats", [], "list"),
          Field("label", "browser_labels", [], "list"),
          Field("iou", f"browser_iou_{hi}", (0.0, hi), "range"),
          Field("q", "browser_search", ""), Field("only", "browser_only", False, "bool"),
          Field("fm", "browser_formula", ""),
          Field("sort", "browser_sort", SORTS[0])]
urlstate.restore("browser", FIELDS, valid={
    "cat": lambda v: [c for c in v if c in cats], "label": lambda v: [c for c in v if c in labels],
    "iou": lambda v: (max(0.0, min(v)), min(hi, max(v))), "sort": lambda v: v if v in SORTS else None})
f1, f2, f3, f4 = st.columns([2, 2, 3, 2])
with f1:
    pick_cats = st.multiselect("Category", cats, key="browser_cats", placeholder="all")
with f2:
    pick_labels = st.multiselect("Label", labels, key="browser_labels", placeholder="all")
with f3:
    lo_hi = st.slider("IoU range", 0.0, hi, step=0.001, format="%.3f", key=f"browser_iou_{hi}")
with f4:
    search = st.text_input("Concept search", key="browser_search", placeholder="e.g. tree",
                           help="Matches the unit's label and its best label in every category")
g1, g2, g3, g4 = st.columns([2, 2, 3, 2])
with g3:
    mention = st.text_input("Formula mentions", key="browser_formula", placeholder="e.g. tree",
                            help="Units whose compositional formula uses this concept "
                                 "(exact name; `python -m dissect explain` makes formulas)")
with g1:
    only = st.toggle("Interpretable only", key="browser_only",
                     help="IoU at least the run's threshold")
with g2:
    sig = st.toggle("Significant only", key="browser_sig", disabled=not trust,
                    help="q ≤ 0.05 under the image-permutation null (Benjamini–Hochberg over "
                    "the layer)" if trust else "This run has no null model: dissect it again "
                    "with --null")
with g4:
    sort = st.selectbox("Sort by", SORTS, key="browser_sort")
common.set_params(**urlstate.params("browser", FIELDS))

view = units
if pick_cats:
    view = view[view["category"].isin(pick_cats)]
if pick_labels:
    view = view[view["label"].isin(pick_labels)]
view = view[(view["iou"].fillna(0) >= lo_hi[0]) & (view["iou"].fillna(0) <= lo_hi[1])]
if only:
    view = view[view["interpretable"]]
if sig and trust:
    view = view[view["significant"].astype(bool)]
if search.strip():
    q = search.strip().lower()
    text_cols = [c for c in view.columns if c == "label" or c.endswith("-label")]
    hit = view[text_cols].astype(str).apply(lambda s: s.str.lower().str.contains(q, regex=False))
    view = view[hit.any(axis=1)]
if mention.strip():
    names = [str(n) for n in get_run(ctx.path, ctx.stamp).concepts["name"]]
    view, note = formulas.filter_mentions(view, mention, names)
    if note:
        st.warning(note)
view = {"IoU ↓": lambda v: v.sort_values("iou", ascending=False),
        "unit ↑": lambda v: v.sort_values("unit"),
        "label": lambda v: v.sort_values(["label", "iou"], ascending=[True, False]),
        "category": lambda v: v.sort_values(["category", "iou"], ascending=[True, False]),
        "p-value ↑": lambda v: v.sort_values(["p_value", "iou"], ascending=[True, False]),
        }[sort](view)

tab_cards, tab_table = st.tabs([f"Cards ({len(view)})", "Table"])
with tab_table:
    shown = [c for c in ["unit", "label", "category", "iou", "iou_heldout", "formula",
                         "formula_iou_heldout", "threshold", "interpretable", "p_value",
                         "q_value", "significant", "p_localised", "iou_lo", "iou_hi",
                         "label_stability"]
             if c in view.columns] + [c for c in view.columns if c.endswith("-label")]
    table = view[shown].copy()
    q = {"run": ctx.entry.name, "layer": ctx.layer}
    table.insert(1, "link", [f"unit_detail?{urlencode({**q, 'unit': int(u)})}"
                             for u in table["unit"]])
    sel = st.dataframe(
        table, hide_index=True, key="browser_table", on_select="rerun",
        selection_mode="multi-row", height=420,
        column_config={"link": st.column_config.LinkColumn("share", display_text="open ↗",
                                                           help="The unit's shareable link"),
                       "iou": st.column_config.NumberColumn("IoU", format="%.4f"),
                       "threshold": st.column_config.NumberColumn("T_k", format="%.4g"),
                       **{c: st.column_config.NumberColumn(c, format="%.4f") for c in
                          ("iou_heldout", "iou_lo", "iou_hi")},
                       **{c: st.column_config.NumberColumn(c, format="%.3g") for c in
                          ("p_value", "q_value", "p_localised")}})
    rows = list(sel.selection.rows) if sel is not None and hasattr(sel, "selection") else []
    chosen = [int(view.iloc[r]["unit"]) for r in rows]
    st.caption(f"{len(chosen)} selected" if chosen else
               "Select rows to ablate just those; otherwise the filtered units are used.")
    c1, c2 = st.columns([1, 3])
    with c1:
        target = chosen or [int(u) for u in view["unit"]]
        if st.button(f"Ablate these units ({len(target)})", key="ablate_btn",
                     icon=":material/science:", disabled=not target):
            st.session_state["ablate_units"] = {"layer": ctx.layer, "units": target}
            if "ablation" in nav.available():
                common.go("ablation")
            else:
                st.warning("The ablation lab is not installed in this build.")
    with c2:
        if len(chosen) == 1:
            common.page_link("unit", label=f"Open unit {chosen[0]}", unit=chosen[0])

with tab_cards:
    if view.empty:
        st.info("No unit matches these filters.")
    else:
        pages = (len(view) + PER_PAGE - 1) // PER_PAGE
        page = 1
        if pages > 1:
            pc, _ = st.columns([1, 4])
            page = pc.number_input(f"Page (of {pages}, {PER_PAGE} units each)", 1, pages, 1,
                                   key="browser_page")
        chunk = view.iloc[(page - 1) * PER_PAGE: page * PER_PAGE]
        drawn, vis_dir = cached_units(ctx.path, ctx.layer), cache_dir(ctx.path, ctx.layer)
        for start in range(0, len(chunk), COLS):
            cols = st.columns(COLS)
            for col, (_, row) in zip(cols, chunk.iloc[start:start + COLS].iterrows()):
                u = int(row["unit"])
                with col.container(border=True):
                    # a link: the unit page opens without this page running again first
                    common.page_link("unit", label=f"unit {u} · {row['label'] or '—'}", unit=u)
                    st.markdown(f"{common.badge(row['category'])} &nbsp; IoU **{row['iou']:.3f}**"
                                + ("" if row["interpretable"] else " &nbsp;·&nbsp; *below t*")
                                + (f" &nbsp;·&nbsp; p {row['p_value']:.3g}"
                                   + (" ✓" if row["significant"] else "") if trust else ""),
                                unsafe_allow_html=True)
                    if str(row.get("formula", "") or "") and row["formula"] != row["label"]:
                        st.caption(f"formula: {row['formula']}")
                    st.image(unit_strip(ctx.path, ctx.stamp, ctx.layer, u), width="stretch")
                    if u in drawn:       # drawn on its unit page (dissect.visualize.cache)
                        st.image(str(vis_dir / f"unit_{u}.png"), width=96,
                                 caption="what it wants to see")
