"""Image viewer: one probe image, its concept segmentation, the units that fire on it, and the
image segmented by the labels of its top units."""
from __future__ import annotations

import html

import numpy as np

import streamlit as st

from dissect.runs.render import MissingImage, concept_color
from studio import common
from studio.data import concepts_table, images_table, layer_arrays, plain_image, renderer, units_table

ctx = common.need_run()
images = images_table(ctx.path, ctx.stamp)
n_img = len(images)
if n_img == 0:
    st.title("No probe images")
    st.error("This run's images.csv lists no images; rerun the dissection.")
    st.stop()
idx = st.session_state.get("image")
if not isinstance(idx, int) or not 0 <= idx < n_img:
    if idx is not None:
        st.warning(f"The probe set has images 0–{n_img - 1}; image {idx} does not exist.")
    idx = 0
st.session_state["image"] = idx
common.set_params(image=idx)


def _step(d: int) -> None:
    common.set_state(image=(st.session_state["image"] + d) % n_img)


def _jump() -> None:
    common.set_state(image=int(st.session_state["image_jump"]))


def legend(ids: list[int], names: dict[int, str], counts: dict[int, int] | None = None) -> str:
    """HTML colour swatches for concept ids."""
    items = []
    for c in ids:
        r, g, b = concept_color(c, names.get(c))
        extra = f" <span style='opacity:.6'>{counts[c]} px</span>" if counts else ""
        items.append(f"<span style='display:inline-block;margin:2px 8px 2px 0'><span style='"
                     f"display:inline-block;width:12px;height:12px;border-radius:3px;background:"
                     f"rgb({r},{g},{b});margin-right:4px;vertical-align:middle'></span>"
                     f"{html.escape(names.get(c, str(c)))}{extra}</span>")
    return "".join(items)


row = images.iloc[idx]
st.title(f"Image {idx}")
n1, n2, n3, n4 = st.columns([1.3, 1.3, 2, 5.4], vertical_alignment="center")
n1.button("◀ Previous", key="prev_img", on_click=_step, args=(-1,), width="stretch")
n2.button("Next ▶", key="next_img", on_click=_step, args=(1,), width="stretch")
st.session_state["image_jump"] = idx
n3.number_input("Image", 0, n_img - 1, key="image_jump", on_change=_jump,
                label_visibility="collapsed")
n4.caption(f"`{row['path']}` · split {row.get('split', '?')} · layer `{ctx.layer}`")

with st.expander("Pick another image"):
    per = 24
    start = (idx // per) * per
    g1, _ = st.columns([1, 4])
    start = per * (g1.number_input(f"Page (of {(n_img + per - 1) // per})", 1,
                                   (n_img + per - 1) // per, start // per + 1,
                                   key=f"img_page_{idx}") - 1)
    grid = st.columns(8)
    for j, i in enumerate(range(start, min(n_img, start + per))):
        with grid[j % 8]:
            st.image(plain_image(ctx.path, ctx.stamp, i), width="stretch")
            st.button(f"{'▶ ' if i == idx else ''}{i}", key=f"pick_{i}", width="stretch",
                      on_click=common.set_state, kwargs={"image": i})

r = renderer(ctx.path, ctx.stamp)
concepts = concepts_table(ctx.path, ctx.stamp)
names = dict(zip(concepts["concept"].astype(int), concepts["name"].astype(str)))
try:
    r.image(idx)
    image_ok = True
except MissingImage as e:
    image_ok = False
    st.error(str(e))

left, mid, right = st.columns(3)
with left:
    st.subheader("Image")
    st.image(plain_image(ctx.path, ctx.stamp, idx), width="stretch")
with mid:
    st.subheader("Concept segmentation")
    planes = r.planes(idx) if image_ok else {}
    if r.probe_error:
        st.info(f"The probe set could not be reopened, so its labels are unavailable: "
                f"{r.probe_error}")
    elif not planes:
        st.caption("No pixel-level concepts on this image.")
    else:
        cats = sorted(planes)
        cat = st.segmented_control("Category", cats, default=cats[0], key="seg_cat") or cats[0]
        data, ids = r.segmentation(idx, cat)
        st.image(data, width="stretch")
        st.markdown(legend(ids, names) or "<i>no labels</i>", unsafe_allow_html=True)
    scal = r.scalars(idx) if image_ok and not r.probe_error else {}
    tags = [f"{names.get(int(c), c)} ({cat})" for cat, v in scal.items() for c in v if c > 0]
    if tags:
        st.caption("Image-level: " + ", ".join(tags))

units = units_table(ctx.path, ctx.layer, ctx.stamp)
imgmax = layer_arrays(ctx.path, ctx.layer, ctx.stamp)["imgmax"][idx]
thr = units["threshold"].to_numpy(np.float32)
firing = units.assign(max_act=imgmax, ratio=imgmax / np.maximum(np.abs(thr), 1e-6))
firing = firing[imgmax > thr].sort_values("ratio", ascending=False)

with right:
    st.subheader("Segmented by top units")
    top_n = st.slider("Top interpretable units", 1, 40, 10, key="seg_units",
                      help="Each pixel takes the label of the unit firing most above its "
                           "threshold there")
    top = firing[firing["interpretable"]].head(top_n)
    if top.empty and not firing.empty:
        st.caption("No interpretable unit fires here; using the best labels of the units "
                   "that do fire (all below the IoU threshold).")
        top = firing.head(top_n)
    if top.empty:
        st.caption("No unit fires on this image.")
    elif not image_ok:
        st.caption("Needs the image.")
    else:
        try:
            data, counts = r.unit_segmentation(ctx.layer, idx, top["unit"].astype(int).tolist(),
                                               top["concept"].fillna(0).astype(int).tolist())
            st.image(data, width="stretch")
            ids = sorted(counts, key=lambda c: -counts[c])
            st.markdown(legend(ids, names, counts), unsafe_allow_html=True)
        except MissingImage as e:
            st.info(str(e))

st.subheader(f"Units that fire on this image ({len(firing)} of {len(units)})")
st.caption("Max activation above the unit's threshold T_k, strongest (relative to T_k) first. "
           "Select a row to open the unit.")
show = firing[["unit", "label", "category", "iou", "max_act", "ratio"]].reset_index(drop=True)
sel = st.dataframe(show, hide_index=True, key="firing", on_select="rerun",
                   selection_mode="single-row", height=320,
                   column_config={"iou": st.column_config.NumberColumn("IoU", format="%.3f"),
                                  "max_act": st.column_config.NumberColumn("max", format="%.3g"),
                                  "ratio": st.column_config.NumberColumn("max / T_k",
                                                                         format="%.2f")})
rows = sel.selection.rows if sel is not None and hasattr(sel, "selection") else []
if rows:
    common.go("unit", unit=int(show.iloc[rows[0]]["unit"]))

