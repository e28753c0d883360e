"""Ablation lab: switch units off (or set them) and watch classifications change, live.

Units come from the run's labels (all units labelled "tree"), from class importance (the top 10
units for "beach"), by hand, or from the unit browser (st.session_state["ablate_units"] =
{"layer": str, "units": [int]}). Predictions on a probe image or an upload, and per-class accuracy
on a labelled set, update on every change. Results export as CSV / JSON with the units' labels.
Self-contained: imports dissect.* only.
"""
from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dissect.ablation import (ImageAblation, Intervention, image_tensor, means_from_run,
                              open_image)
from dissect.errors import USER_ERRORS, AblationError
from dissect.models import list_layers, load_model

torch.set_grad_enabled(False)
MAX_UPLOAD = 25 * 2 ** 20


@st.cache_resource
def model_lock() -> threading.RLock:
    """Hooks and replays edit the shared model object: one page run at a time uses it."""
    return threading.RLock()


@st.cache_resource(show_spinner="Loading the model…")
def get_model(name: str, weights: str):
    return load_model(name, weights)


@st.cache_resource
def get_lab(name: str, weights: str) -> ImageAblation:
    return ImageAblation(get_model(name, weights))


@st.cache_data(show_spinner=False)
def get_units(run_path: str, layer: str) -> pd.DataFrame | None:
    from dissect.runs import open_run
    try:
        return open_run(run_path).units(layer)
    except USER_ERRORS:
        return None


@st.cache_data(show_spinner=False)
def get_images(run_path: str) -> pd.DataFrame | None:
    from dissect.runs import open_run
    try:
        return open_run(run_path).images
    except USER_ERRORS:
        return None


@st.cache_resource(show_spinner="Computing the units' means over the probe set…")
def get_means(run_path: str, layer: str):
    from dissect.runs import open_run
    return means_from_run(open_run(run_path), layer)


@st.cache_resource(show_spinner="Computing the units' means over the labelled set…")
def get_set_means(name: str, weights: str, spec: str, layer: str, limit: int):
    from dissect.ablation import unit_means
    lset, _ = get_set(name, weights, spec, layer, limit)
    return unit_means(get_model(name, weights), layer, (x for _i, x in lset.batches(32)))


@st.cache_resource(show_spinner="Running the labelled set through the model once…")
def get_set(name: str, weights: str, spec: str, layer: str, limit: int):
    from dissect.labelled import SetCache, open_labelled_set
    lm = get_model(name, weights)
    lset = open_labelled_set(spec, lm, limit=limit)
    return lset, SetCache(lm, lset, [layer])


@st.cache_resource(show_spinner="Ranking every unit for every class (each removed alone)…")
def get_importance(name: str, weights: str, spec: str, layer: str, limit: int):
    from dissect.importance import rank_units
    lset, _ = get_set(name, weights, spec, layer, limit)
    return rank_units(get_model(name, weights), lset, layer)


@st.cache_data(show_spinner="Removing the top-N units of every class, and keeping only them…")
def get_curve(name: str, weights: str, spec: str, layer: str, limit: int, ns: tuple, by: str):
    from dissect.importance import control_curve
    lset, _ = get_set(name, weights, spec, layer, limit)
    imp = get_importance(name, weights, spec, layer, limit)
    return control_curve(get_model(name, weights), lset, imp, list(ns), by=by)


def show_curve(curve: pd.DataFrame) -> None:
    import plotly.graph_objects as go
    fig = go.Figure()
    for col, name in (("removed_top", "top N removed"), ("kept_top_only", "only top N kept"),
                      ("baseline", "no ablation")):
        fig.add_trace(go.Scatter(x=curve["n"], y=curve[col], mode="lines+markers", name=name))
    fig.update_layout(xaxis_title="N units", yaxis_title="mean balanced accuracy",
                      xaxis_type="log", height=320, margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(fig, key="abl_curve_chart")
    st.dataframe(curve, hide_index=True)


@st.cache_data(show_spinner=False)
def get_layers(name: str, weights: str) -> list[tuple[str, int]]:
    return [(l.name, l.shape[0]) for l in list_layers(get_model(name, weights)) if l.spatial]


def pick_run():
    """The run chosen in the app's sidebar (session "run"), else one picked here, else None."""
    from dissect.runs import list_runs
    root = Path(os.environ.get("DISSECT_RUNS", "runs")).resolve()
    runs = [r for r in list_runs(root) if r.status == "complete"] if root.is_dir() else []
    name = st.session_state.get("run")
    run = next((r for r in runs if r.name == name), None)
    if run is None and runs:
        run = runs[0]
        if "run" not in st.session_state:
            pick = st.selectbox("Run", [r.name for r in runs], key="abl_run")
            run = next(r for r in runs if r.name == pick)
    return run


def app_context() -> None:
    """Let the app's shared sidebar know this page ran (and draw it when the app did not)."""
    try:
        from studio import common
    except ImportError:          # the page also works on its own
        return
    common.context()


def main() -> None:
    units_param = st.query_params.get("units")      # read before the sidebar rewrites the URL
    app_context()
    st.title("Ablation lab")
    run = pick_run()
    presets = {"efficientnet_lite0 (real ImageNet weights)": ("efficientnet_lite0", "DEFAULT"),
               "toyworld (scene CNN)": ("toyworld", "default"),
               "resnet18 (random init)": ("resnet18", "none")}
    choices = ([f"the run's model ({run.config.get('model', '?')}, with unit labels)"]
               if run is not None else []) + list(presets)
    choice = st.selectbox("Model", choices, key="abl_model",
                          help="Unit labels, concepts and probe images come from the run; the "
                               "presets work on sample photos, uploads and labelled sets.")
    if run is not None and choice == choices[0]:
        cfg = run.config
        model_name, weights = cfg.get("model", "resnet18"), str(cfg.get("weights", "none"))
        layer = st.session_state.get("layer") if st.session_state.get("layer") in run.layers \
            else run.layers[-1]
        st.caption(f"Run **{run.name}** · model `{model_name}` · weights `{weights}` · "
                   f"layer `{layer}`")
    else:
        if run is None:
            st.info("No complete run found: unit labels need a run; presets work without one.")
        run = None
        model_name, weights = presets[choice]
    try:
        lm = get_model(model_name, weights)
    except USER_ERRORS as e:
        st.error(f"The model cannot be loaded: {e}")
        st.stop()
    layers = dict(get_layers(model_name, weights))
    if run is None:
        names = list(layers)
        default = "conv_head" if "conv_head" in names else names[-1]
        layer = st.selectbox("Layer", names, index=names.index(default), key=f"abl_layer_{model_name}")
    k = layers.get(layer)
    if k is None:
        st.error(f"Layer '{layer}' has no spatial output in {model_name}.")
        st.stop()
    units_df = get_units(str(run.path), layer) if run is not None else None

    # ---- selection (from the unit browser, concept, importance, by hand) ---------------------
    sel_key = f"abl_units_{layer}"
    handoff = st.session_state.pop("ablate_units", None)
    if handoff is None and units_param:                     # ?units=3,17 (a shared link)
        try:
            from dissect.ablation import parse_units
            handoff = {"layer": layer, "units": parse_units(units_param)}
        except AblationError as e:
            st.warning(f"Ignoring the link's units: {e}")
        st.query_params.pop("units", None)
    if isinstance(handoff, dict) and handoff.get("layer") == layer:
        st.session_state[sel_key] = sorted({int(u) for u in handoff.get("units", []) if 0 <= int(u) < k})
    st.session_state.setdefault(sel_key, [])

    def label_of(u: int) -> str:
        if units_df is None or u >= len(units_df):
            return str(u)
        r = units_df.iloc[u]
        return f"{u} · {r['label']} ({float(r['iou']):.2f})"

    st.subheader("Units")
    how = st.tabs(["By concept", "By class importance", "By hand"])
    with how[0]:
        if units_df is None:
            st.caption("Needs a run folder with unit labels.")
        else:
            cut = float(run.config.get("iou_threshold", 0.04) or 0.04)
            good = units_df[units_df["iou"].astype(float) >= cut]
            counts = good["label"].value_counts()
            if counts.empty:
                st.caption(f"No unit of {layer} has IoU >= {cut:g}.")
            else:
                concept = st.selectbox("Concept", list(counts.index), key="abl_concept",
                                       format_func=lambda c: f"{c} ({counts[c]} units)")
                chosen = sorted(int(u) for u in good[good["label"] == concept]["unit"])
                st.button(f"Select all units labelled {concept}", key="abl_use_concept",
                          on_click=_set_units, args=(sel_key, chosen))
    st.session_state.setdefault("abl_set", "toyworld:200" if model_name == "toyworld" else "")
    set_spec = st.session_state["abl_set"]
    with how[1]:
        if not set_spec:
            st.caption("Choose a labelled set below (ToyWorld or an ImageFolder) first.")
        else:
            try:
                imp = get_importance(model_name, weights, set_spec, layer, int(st.session_state.get("abl_limit", 200)))
                names = [lm.class_names[c] for c in imp.classes]
                c1, c2, c3 = st.columns([3, 2, 1])
                cls = c1.selectbox("Class", names, key="abl_imp_class")
                by = c2.selectbox("Measure", ["balanced", "acc", "logit"], key="abl_imp_by",
                                  format_func=lambda b: {"balanced": "balanced-accuracy drop",
                                                         "acc": "accuracy drop",
                                                         "logit": "class-logit drop"}[b])
                n = c3.number_input("Top N", 1, k, 10, key="abl_imp_n")
                st.button(f"Select the top {n} units for {cls}", key="abl_use_imp",
                          on_click=_set_units, args=(sel_key, sorted(imp.top(cls, int(n), by=by))))
                table = imp.table(cls, by=by).head(int(n))
                if units_df is not None:
                    table = table.merge(units_df[["unit", "label", "iou"]], on="unit", how="left")
                st.dataframe(table, hide_index=True, height=200)
                with st.expander("Control (PNAS): remove each class's top N vs keep only its top N"):
                    if st.button("Compute the curve", key="abl_control"):
                        ns = sorted({n for n in (1, 2, 5, 10, 20, 50, 100, k // 2) if 0 < n < k})
                        st.session_state["abl_curve"] = get_curve(
                            model_name, weights, set_spec, layer,
                            int(st.session_state.get("abl_limit", 200)), tuple(ns), by)
                    curve = st.session_state.get("abl_curve")
                    if curve is not None:
                        show_curve(curve)
            except USER_ERRORS as e:
                st.error(str(e))
    with how[2]:
        st.multiselect("Units", list(range(k)), key=sel_key, format_func=label_of)
    c1, c2, c3, c4 = st.columns([1, 1, 2, 2])
    c1.button("Reset", key="abl_reset", on_click=_set_units, args=(sel_key, []))
    c2.button("Invert", key="abl_invert", on_click=_invert_units, args=(sel_key, k))
    mode = c3.selectbox("Mode", ["zero", "mean", "value", "scale"], key="abl_mode")
    value = c4.number_input("Value / factor", value=0.0 if mode == "value" else 0.5, key="abl_value",
                            disabled=mode in ("zero", "mean"))
    units = list(st.session_state[sel_key])
    means = None
    if mode == "mean":
        means = get_means(str(run.path), layer) if run is not None else None
        if means is None and st.session_state.get("abl_set"):
            try:
                means = get_set_means(model_name, weights, st.session_state["abl_set"], layer,
                                      int(st.session_state.get("abl_limit", 200)))
                st.caption("Unit means over the labelled set below.")
            except USER_ERRORS as e:
                st.error(str(e))
        if means is None:
            st.warning("No unit means: the run kept no activations (acts.npy) and no labelled "
                       "set is chosen below; using zero.")
            mode = "zero"
    iv = Intervention(layer, tuple(units), mode, float(value), means)
    st.caption(f"{len(units)} of {k} units selected · {iv.describe()}")

    # ---- one image --------------------------------------------------------------------------
    st.subheader("One image")
    x, path = choose_image(lm, run)
    result = None
    if x is not None:
        lab = get_lab(model_name, weights)
        try:
            result = lab.compare(x, [iv] if units else [], path=path)
        except USER_ERRORS as e:
            st.error(str(e))
        if result is not None:
            c1, c2, c3 = st.columns([1, 2, 2])
            c1.image(x.permute(1, 2, 0).numpy(), caption=os.path.basename(path), width="stretch")
            c2.dataframe(pd.DataFrame(result.before, columns=["before", "p"]), hide_index=True)
            c3.dataframe(pd.DataFrame(result.after, columns=["after", "p"]), hide_index=True)
            if result.changes:
                show_changes(pd.DataFrame(result.changes))
            else:
                st.caption("No class moved.")

    # ---- a labelled set ---------------------------------------------------------------------
    st.subheader("Per-class accuracy on a labelled set")
    c1, c2 = st.columns([3, 1])
    spec = c1.text_input("Set", key="abl_set",
                         help="toyworld:N (ToyWorld scenes) or folder:DIR (ImageFolder layout)")
    limit = c2.number_input("At most images", 10, 5000, 200, key="abl_limit")
    set_result = None
    if spec:
        try:
            _lset, cache = get_set(model_name, weights, spec, layer, int(limit))
            set_result = cache.evaluate([iv] if units else [])
        except USER_ERRORS as e:
            st.error(str(e))
    if set_result is not None:
        m1, m2 = st.columns(2)
        m1.metric("Accuracy before", f"{set_result.acc_before:.1%}")
        m2.metric("Accuracy after", f"{set_result.acc_after:.1%}",
                  delta=f"{set_result.acc_after - set_result.acc_before:+.1%}")
        st.dataframe(set_result.classes.drop(columns=["index"]), hide_index=True)
        most = set_result.most_changed(5)
        st.caption("Changed most: " + ", ".join(f"{r['class']} {r['delta']:+.1%}"
                                                 for _i, r in most.iterrows()))
    export(iv, units_df, result, set_result, run, model_name, weights)


def show_changes(ch: pd.DataFrame, n: int = 15) -> None:
    """Horizontal bars: the classes whose probability moved most, largest move on top."""
    import plotly.graph_objects as go
    ch = ch.head(n).iloc[::-1]
    fig = go.Figure(go.Bar(x=ch["delta"], y=ch["class"], orientation="h",
                           marker_color=["#d62728" if d < 0 else "#2ca02c" for d in ch["delta"]],
                           customdata=ch[["before", "after"]],
                           hovertemplate="%{y}: %{customdata[0]:.3f} → %{customdata[1]:.3f}"
                                         "<extra></extra>"))
    fig.update_layout(title=f"Probability change ({len(ch)} classes that moved most)",
                      xaxis_title="after − before", height=120 + 22 * len(ch),
                      margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, key="abl_changes")


def _set_units(key: str, units: list[int]) -> None:
    st.session_state[key] = [int(u) for u in units]


def _invert_units(key: str, k: int) -> None:
    chosen = set(st.session_state.get(key, []))
    st.session_state[key] = [u for u in range(k) if u not in chosen]


def choose_image(lm, run):
    """(3×S×S tensor in [0, 1], name) from a probe image, an upload or a sample photo."""
    sources = (["Probe image"] if run is not None else []) + ["Upload", "Sample photo"]
    src = st.radio("Image", sources, horizontal=True, key="abl_src")
    try:
        if src == "Probe image":
            images = get_images(str(run.path))
            if images is None or images.empty:
                st.caption("The run lists no images.")
                return None, ""
            i = st.number_input("Probe image index", 0, len(images) - 1, 0, key="abl_img")
            path = str(images.iloc[int(i)]["path"])
            img = open_image(path)
            x = _fit(lm, img)
            return x, path
        if src == "Upload":
            up = st.file_uploader("An image", key="abl_upload")
            if up is None:
                return None, ""
            if up.size > MAX_UPLOAD:
                st.error(f"'{up.name}' is {up.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD // 2**20} MB.")
                return None, ""
            return image_tensor(lm, io.BytesIO(up.getvalue()), name=up.name), up.name
        import skimage.data
        name = st.selectbox("Photo", ["chelsea", "coffee", "astronaut", "rocket", "horse"], key="abl_photo")
        from PIL import Image
        arr = getattr(skimage.data, name)()
        img = Image.fromarray(arr if arr.ndim == 3 else np.stack([arr] * 3, -1))
        return lm.prepare(img), f"skimage:{name}"
    except AblationError as e:
        st.error(str(e))
        return None, ""


def _fit(lm, img) -> torch.Tensor:
    """Probe images are fed at their stored size when it is the model's, else resized/cropped."""
    import torchvision.transforms.v2.functional as TF
    if img.size == (lm.input_size, lm.input_size):
        return TF.to_dtype(TF.to_image(img), torch.float32, scale=True)
    return lm.prepare(img)


def export(iv, units_df, result, set_result, run, model_name, weights) -> None:
    st.subheader("Export")
    rows = pd.DataFrame({"unit": list(iv.units)})
    if units_df is not None and len(rows):
        cols = [c for c in ("unit", "category", "label", "iou") if c in units_df.columns]
        rows = rows.merge(units_df[cols], on="unit", how="left")
    payload = {"model": model_name, "weights": weights, "run": str(run.path) if run else None,
               "layer": iv.layer, "mode": iv.mode, "value": iv.value,
               "units": rows.to_dict("records"),
               "image": result.to_json() if result is not None else None,
               "set": set_result.to_json() if set_result is not None else None}
    table = rows.assign(layer=iv.layer, mode=iv.mode, value=iv.value)
    if set_result is not None:
        table = table.assign(acc_before=set_result.acc_before, acc_after=set_result.acc_after)
    c1, c2 = st.columns(2)
    c1.download_button("Download JSON", json.dumps(payload, indent=1, default=float),
                       file_name="ablation.json", mime="application/json", key="abl_dl_json")
    c2.download_button("Download CSV (units)", table.to_csv(index=False), file_name="ablation_units.csv",
                       mime="text/csv", key="abl_dl_csv")
    if set_result is not None:
        st.download_button("Download CSV (per-class accuracy)",
                           set_result.classes.to_csv(index=False), file_name="ablation_classes.csv",
                           mime="text/csv", key="abl_dl_classes")


with model_lock():
    main()
