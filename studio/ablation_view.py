"""Drawing pieces of the ablation lab (not a page): the image gallery, the before/after view,
the control curve and the export.

    pick = image_gallery(run_path, stamp, n_images, unit_tops)   # thumbnails; the pick in session
    steer = steer_picker(lm, layer)                               # a saved direction, or None
    effect_view(result, image_bytes_or_array, name, what, changed)  # top-5, chart, tables
    export(iv, units_df, result, set_result, run, model, weights)

The chosen image lives in st.session_state["abl_pick"]: {"kind": "probe", "index": 17},
{"kind": "sample", "name": "chelsea"} or {"kind": "upload"} (bytes in "abl_upload_data").
"""
from __future__ import annotations

import json
import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dissect.interventions.ablation import moved_most
from studio.lab import SAMPLES, sample_thumb

PER_PAGE = 12
COLS = 6
MAX_UPLOAD = 25 * 2 ** 20
PICK = "abl_pick"


def set_pick(pick: dict) -> None:
    st.session_state[PICK] = pick


def _on_upload() -> None:
    up = st.session_state.get("abl_upload")
    if up is None:
        return
    if up.size > MAX_UPLOAD:
        st.session_state["abl_upload_error"] = (f"'{up.name}' is {up.size / 2**20:.0f} MB; the "
                                                f"limit is {MAX_UPLOAD // 2**20} MB.")
        return
    st.session_state["abl_upload_data"] = (up.name, up.getvalue())
    set_pick({"kind": "upload"})


def _thumbs(items: list[tuple[str, dict, bytes]], chosen: dict | None) -> None:
    """A grid of thumbnails, each with a button that picks it."""
    for start in range(0, len(items), COLS):
        cols = st.columns(COLS)
        for col, (label, pick, data) in zip(cols, items[start:start + COLS]):
            key = "abl_use_" + re.sub(r"\W+", "_", label).strip("_")      # abl_use_image_17
            col.image(data, width="stretch")
            col.button(label, key=key, on_click=set_pick, args=(pick,), width="stretch",
                       type="primary" if pick == chosen else "secondary")


def image_gallery(run_path: str | None, n_images: int, thumb, unit_tops: list[tuple[int, int, int]],
                  word: str = "unit") -> None:
    """Pick the image: probe images (the chosen units' top images first, then every probe
    image, paged), a sample photo or an upload. `thumb(index)` gives a probe image's JPEG;
    `unit_tops` is [(unit, rank, image index)]; `word`: "unit" or "feature"."""
    chosen = st.session_state.get(PICK)
    sources = (["Probe images"] if run_path else []) + ["Sample photos", "Upload"]
    src = st.segmented_control("Images from", sources, key=f"abl_src_{len(sources)}",
                               default=sources[0],
                               label_visibility="collapsed") or sources[0]
    if src == "Probe images":
        seen, items = set(), []
        for unit, rank, i in unit_tops:
            if i not in seen:
                seen.add(i)
                items.append((f"{word} {unit} · #{rank + 1}", {"kind": "probe", "index": int(i)}))
        first = len(items)
        items += [(f"image {i}", {"kind": "probe", "index": i}) for i in range(n_images)]
        pages = max(1, -(-len(items) // PER_PAGE))
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption((f"The top images of the chosen {word}s first ({first}), then all "
                    if first else "All ") + f"{n_images} probe images; click one to use it.")
        page = c2.number_input("Page", 1, pages, 1, key="abl_gallery_page",
                               help=f"{pages} pages of {PER_PAGE}")
        shown = items[(int(page) - 1) * PER_PAGE:int(page) * PER_PAGE]
        _thumbs([(label, pick, thumb(pick["index"])) for label, pick in shown], chosen)
    elif src == "Sample photos":
        st.caption("Photos bundled with scikit-image (offline).")
        _thumbs([(name, {"kind": "sample", "name": name}, sample_thumb(name)) for name in SAMPLES],
                chosen)
    else:
        st.file_uploader("A PNG or JPEG image", type=["png", "jpg", "jpeg", "webp", "bmp"],
                         key="abl_upload", on_change=_on_upload)
        err = st.session_state.pop("abl_upload_error", None)
        if err:
            st.error(err)


# ---- before / after --------------------------------------------------------------------------

def _top_list(title: str, top: list[tuple[str, float]]) -> str:
    rows = "\n".join(f"{r}. {c} · **{p:.1%}**" if p >= 0.001 else f"{r}. {c} · **{p:.2e}**"
                     for r, (c, p) in enumerate(top, 1))
    return f"**{title}**\n\n{rows}"


def diverging_chart(changes: list[dict], n: int = 12) -> go.Figure:
    """Bars of probability change, zero in the middle: gains right (green), losses left (red)."""
    rows = moved_most(changes, n)[::-1]              # plotly draws the first row at the bottom
    deltas = [r["delta"] for r in rows]
    span = max([abs(d) for d in deltas] + [1e-6]) * 1.15
    fig = go.Figure(go.Bar(
        x=deltas, y=[r["class"] for r in rows], orientation="h",
        marker_color=["#d62728" if d < 0 else "#2ca02c" for d in deltas],
        text=[f"{r['before']:.3f} → {r['after']:.3f}" for r in rows], textposition="auto",
        hovertemplate="%{y}: %{text}<extra></extra>"))
    fig.add_vline(x=0, line_color="#666")
    fig.update_layout(title=f"Probability change: the {len(rows)} classes that moved most",
                      xaxis=dict(title="after − before", range=[-span, span], zeroline=False),
                      height=140 + 24 * len(rows), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def _top_chart(top: list[tuple[str, float]]) -> go.Figure:
    rows = top[::-1]
    fig = go.Figure(go.Bar(x=[p for _c, p in rows], y=[c for c, _p in rows], orientation="h",
                           marker_color="#1f77b4", hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_layout(title="Top 5 before any ablation", xaxis_title="probability",
                      height=140 + 24 * len(rows), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def steer_picker(lm, layer: str):
    """A direction saved from the Directions page (under <runs>/directions/) for this model and
    layer, to steer along as well: a dissect.directions.steering.SteerIntervention, or None."""
    import os
    from pathlib import Path

    from dissect.directions.concept import check_direction
    from dissect.errors import USER_ERRORS
    from dissect.directions.steering import SteerIntervention, saved_directions
    from studio.lab import saved_direction
    saved = saved_directions(Path(os.environ.get("DISSECT_RUNS", "runs")).resolve())
    usable, elsewhere = {}, []
    for name, folder in saved.items():
        try:
            d = saved_direction(str(folder), (folder / "direction.json").stat().st_mtime_ns)
            check_direction(d, lm, layer=layer)
            usable[name] = d
        except USER_ERRORS + (ValueError, OSError):
            elsewhere.append(name)
    with st.expander("Steer along a saved direction",
                     expanded=st.session_state.get("abl_steer", "none") != "none"):
        if not usable:
            st.caption("No direction saved for this model at this layer"
                       + (f" ({len(elsewhere)} for other models or layers)" if elsewhere else "")
                       + ": compute one on the Directions page and save it.")
            return None
        c1, c2 = st.columns([2, 3])
        name = c1.selectbox("Direction", ["none", *usable], key="abl_steer",
                            format_func=lambda n: n if n == "none" else
                            f"{n} · {usable[n].concept} ({usable[n].method})")
        alpha = c2.slider("α, in σ of the projection", -8.0, 8.0, 4.0, 0.5, key="abl_alpha",
                          disabled=name == "none")
        return None if name == "none" else SteerIntervention(usable[name], alpha)


def effect_view(result, image, name: str, what: str, ablated: bool,
                after_title: str = "After the ablation") -> None:
    """The image, its top-5 before (and after), and the diverging chart of what moved."""
    with st.container(key="abl_effect"):
        c1, c2, c3 = st.columns([1.2, 1.3, 3])
        short = name.replace("\\", "/").rsplit("/", 1)[-1]      # never a server path
        c1.image(image, caption=short, width="stretch")
        with c2.container(key="abl_predictions"):
            st.markdown(_top_list("Top 5", result.before))
            if ablated:
                st.markdown(_top_list(after_title, result.after))
        with c3:
            if not ablated:
                st.plotly_chart(_top_chart(result.before), key="abl_effect_chart")
                st.caption("Choose units above to see which classes move.")
            elif result.changes:
                st.plotly_chart(diverging_chart(result.changes), key="abl_effect_chart")
            else:
                st.info("No class moved by 0.01 % or more.")
            st.caption(f"{what if ablated else 'no units ablated'} · {short}")
        if st.toggle("Show the before/after tables", key="abl_tables"):
            t1, t2, t3 = st.columns([1, 1, 2])
            t1.dataframe(pd.DataFrame(result.before, columns=["before", "p"]), hide_index=True)
            t2.dataframe(pd.DataFrame(result.after, columns=["after", "p"]), hide_index=True)
            t3.dataframe(pd.DataFrame(result.changes, columns=["class", "before", "after", "delta"]),
                         hide_index=True, height=220)


def show_curve(curve: pd.DataFrame) -> None:
    fig = go.Figure()
    for col, name in (("removed_top", "top N removed"), ("kept_top_only", "only top N kept"),
                      ("baseline", "no ablation")):
        fig.add_trace(go.Scatter(x=curve["n"], y=curve[col], mode="lines+markers", name=name))
    fig.update_layout(xaxis_title="N units", yaxis_title="mean balanced accuracy",
                      xaxis_type="log", height=320, margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(fig, key="abl_curve_chart")
    st.dataframe(curve, hide_index=True)


def export(iv, units_df, result, set_result, run, model_name: str, weights: str,
           steer=None) -> None:
    st.subheader("Export")
    rows = pd.DataFrame({"unit": list(iv.units)})
    if units_df is not None and len(rows):
        cols = [c for c in ("unit", "category", "label", "iou") if c in units_df.columns]
        rows = rows.merge(units_df[cols], on="unit", how="left")
    payload = {"model": model_name, "weights": weights, "run": str(run.path) if run else None,
               "layer": getattr(iv, "name", "") or iv.layer, "mode": iv.mode, "value": iv.value,
               "units": rows.to_dict("records"),
               "image": result.to_json() if result is not None else None,
               "set": set_result.to_json() if set_result is not None else None,
               "steer": None if steer is None else {
                   "concept": steer.d.concept, "method": steer.d.method, "layer": steer.layer,
                   "alpha_sigma": steer.alpha, "sigma": float(steer.d.sigma)}}
    table = rows.assign(layer=getattr(iv, "name", "") or iv.layer, mode=iv.mode, value=iv.value)
    if set_result is not None:
        table = table.assign(acc_before=set_result.acc_before, acc_after=set_result.acc_after)
    c1, c2 = st.columns(2)             # made on click (callables), not on every rerun
    c1.download_button("Download JSON", lambda: json.dumps(payload, indent=1, default=float),
                       file_name="ablation.json", mime="application/json", key="abl_dl_json")
    c2.download_button("Download CSV (units)", lambda: table.to_csv(index=False),
                       file_name="ablation_units.csv", mime="text/csv", key="abl_dl_csv")
    if set_result is not None:
        st.download_button("Download CSV (per-class accuracy)",
                           lambda: set_result.classes.to_csv(index=False),
                           file_name="ablation_classes.csv", mime="text/csv",
                           key="abl_dl_classes")
