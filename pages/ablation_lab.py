"""Ablation lab: switch units off (or set them) and watch classifications change, live.

Opens on the run's first probe image (a sample photo for the presets) with its top-5 shown.
Units come from the URL (?units=3,17-20, kept there as they change), the unit browser
(st.session_state["ablate_units"] = {"layer": str, "units": [int]}), the run's labels (all
units labelled "tree"), class importance (the top 10 units for "beach") or the picker. Images
are picked from thumbnails. Before/after is a diverging bar chart of the classes that moved
most; per-class accuracy on a labelled set follows. Shared pieces: studio/lab.py (cached
models and sets), studio/ablation_view.py (drawing).
"""
from __future__ import annotations

import streamlit as st
import torch

from dissect.features.layer import layer_label
from dissect.interventions.ablation import format_units, parse_units
from dissect.errors import USER_ERRORS, AblationError
from studio import lab as L
from studio import ablation_view as V
from studio import job_view as JV
from studio import feature_lab as FL

torch.set_grad_enabled(False)


def app_context() -> None:
    """Let the app's shared sidebar know this page ran (and draw it when the app did not)."""
    from studio import common
    common.context()


def choose_model(run):
    """(run or None, model, weights, layer, units table or None) for the lab's model choice."""
    choices = ([f"the run's model ({run.config.get('model', '?')}, with unit labels)"]
               if run is not None else []) + list(L.PRESETS)
    choice = st.selectbox("Model", choices, key="abl_model",
                          help="Unit labels, concepts and probe images come from the run; the "
                               "presets work on sample photos, uploads and labelled sets.")
    if run is not None and choice == choices[0]:
        model_name, weights = L.run_model(run)
        layer = st.session_state.get("layer")
        layer = layer if layer in run.layers else run.layers[-1]
        st.caption(f"Run **{run.name}** · model `{model_name}` · weights `{weights}` · "
                   f"layer `{layer}`")
        return run, model_name, weights, layer
    if run is None:
        st.info("No complete run found: unit labels need a run; presets work without one.")
    model_name, weights = L.PRESETS[choice]
    return None, model_name, weights, None


def take_units(sel_key: str, layer: str, k: int) -> None:
    """Units handed over by the unit browser, or by a link's ?units= the lab did not write."""
    handoff = st.session_state.pop("ablate_units", None)
    url = st.query_params.get("units")
    if handoff is None and url and url != st.session_state.get("_abl_units_url"):
        try:
            handoff = {"layer": layer, "units": parse_units(url, k)}
        except AblationError as e:
            st.warning(f"Ignoring the link's units: {e}")
    if isinstance(handoff, dict) and handoff.get("layer") == layer:
        st.session_state[sel_key] = sorted({int(u) for u in handoff.get("units", [])
                                            if 0 <= int(u) < k})
        st.session_state.pop(V.PICK, None)        # a fresh selection opens on its top image
    st.session_state.setdefault(sel_key, [])


def keep_units_in_url(units: list[int]) -> None:
    text = format_units(units)
    st.session_state["_abl_units_url"] = text
    if text:
        if st.query_params.get("units") != text:
            st.query_params["units"] = text
    else:
        st.query_params.pop("units", None)


def unit_pickers(run, units_df, imp_args, sel_key: str, k: int, lm) -> None:
    """Select units by concept or by class importance (buttons that fill the selection)."""
    how = st.tabs(["By concept", "By class importance"])
    with how[0]:
        if units_df is None:
            st.caption("Needs a run folder with unit labels.")
        else:
            cut = float(run.config.get("iou_threshold", 0.04) or 0.04)
            good = units_df[units_df["iou"].astype(float) >= cut]
            counts = good["label"].value_counts()
            if counts.empty:
                st.caption(f"No unit has IoU >= {cut:g}.")
            else:
                concept = st.selectbox("Concept", list(counts.index), key="abl_concept",
                                       format_func=lambda c: f"{c} ({counts[c]} units)")
                chosen = sorted(int(u) for u in good[good["label"] == concept]["unit"])
                st.button(f"Select all units labelled {concept}", key="abl_use_concept",
                          on_click=_set_units, args=(sel_key, chosen))
    with how[1]:
        if imp_args is None:
            st.caption("Choose a labelled set below (ToyWorld or an ImageFolder) first.")
            return
        if L.job_of("importance", imp_args) is None and not st.button(
                "Rank every unit for every class", key="abl_rank", icon=":material/leaderboard:",
                help="Removes each unit of the layer alone over the labelled set once (in the "
                     "background; shared with the unit page)"):
            st.caption(f"Not ranked yet on {imp_args[2]} (at most {imp_args[4]} images).")
            return
        imp = JV.result(L.importance_job(*imp_args))
        if imp is None:
            return
        names = [lm.class_names[c] for c in imp.classes]
        c1, c2, c3 = st.columns([3, 2, 1])
        cls = c1.selectbox("Class", names, key="abl_imp_class")
        by = c2.selectbox("Measure", ["balanced", "acc", "logit"], key="abl_imp_by",
                          format_func=lambda b: {"balanced": "balanced-accuracy drop",
                                                 "acc": "accuracy drop",
                                                 "logit": "class-logit drop"}[b])
        n = c3.number_input("Top N", 1, k, min(10, k), key="abl_imp_n")
        st.button(f"Select the top {n} units for {cls}", key="abl_use_imp",
                  on_click=_set_units, args=(sel_key, sorted(imp.top(cls, int(n), by=by))))
        table = imp.table(cls, by=by).head(int(n))
        if units_df is not None:
            table = table.merge(units_df[["unit", "label", "iou"]], on="unit", how="left")
        st.dataframe(table, hide_index=True, height=200)
        if FL.is_feature(imp.layer):
            st.caption("The control curve (remove the top N, keep only the top N) is offered "
                       "for layers of units.")
            return
        with st.expander("Control (PNAS): remove each class's top N vs keep only its top N"):
            ns = tuple(sorted({n for n in (1, 2, 5, 10, 20, 50, 100, k // 2) if 0 < n < k}))
            if st.button("Compute the curve", key="abl_control"):
                st.session_state["abl_curve"] = (*imp_args, ns, by)
            if st.session_state.get("abl_curve") == (*imp_args, ns, by):
                curve = JV.result(L.curve_job(imp, *imp_args, ns, by))
                if curve is not None:
                    V.show_curve(curve)


def choose_mode(run, set_args, layer: str):
    """(mode, value, means) from the mode picker; "mean" falls back to zero without means."""
    c3, c4 = st.columns(2)
    mode = c3.selectbox("Mode", ["zero", "mean", "value", "scale"], key="abl_mode")
    value = c4.number_input("Value / factor", value=0.0 if mode == "value" else 0.5,
                            key="abl_value", disabled=mode in ("zero", "mean"))
    means = None
    if mode == "mean":
        means = L.get_means(str(run.path), layer) if run is not None else None
        if means is None and set_args is not None:
            means = JV.result(L.set_means_job(*set_args))
            if means is not None:
                st.caption("Unit means over the labelled set below.")
            else:
                st.caption("Using zero until the unit means over the labelled set are ready.")
                return "zero", float(value), None
        if means is None:
            st.warning(f"No {FL.what_name(layer, 1)} means: the run kept no activations "
                       "(acts.npy)" + ("" if FL.is_feature(layer) else
                                       " and no labelled set is chosen below") + "; using zero.")
            mode = "zero"
    return mode, float(value), means


def main() -> None:
    app_context()
    st.title("Ablation lab")
    run, model_name, weights, layer = choose_model(L.lab_run())
    L.confirm_model_file(model_name)
    try:
        lm = L.get_model(model_name, weights)
    except USER_ERRORS as e:
        st.error(f"The model cannot be loaded: {e}")
        st.stop()
    layers = dict(L.get_layers(model_name, weights))
    if run is None:
        names = list(layers)
        default = "conv_head" if "conv_head" in names else names[-1]
        layer = st.selectbox("Layer", names, index=names.index(default),
                             key=f"abl_layer_{model_name}")
    try:
        k = FL.layer_size(run, layers, layer)
    except USER_ERRORS as e:
        st.error(str(e))
        st.stop()
    if k is None:
        st.error(f"Layer '{FL.base_layer(layer)}' has no spatial output in {model_name}.")
        st.stop()
    base = FL.base_layer(layer)             # the model's layer (conv6 for conv6@sae512)
    units_df = images = arrays = None
    if run is not None:
        from studio.data import images_table, layer_arrays, stamp, units_table
        st_ = stamp(run.path)
        try:
            units_df = units_table(str(run.path), layer, st_)
            images = images_table(str(run.path), st_)
            arrays = layer_arrays(str(run.path), layer, st_)
        except USER_ERRORS + (ValueError, OSError) as e:
            st.warning(f"The run's files cannot be read ({e}); working without unit labels.")

    sel_key = f"abl_units_{layer}"
    take_units(sel_key, layer, k)
    st.session_state.setdefault("abl_set", L.default_set(model_name))
    limit = int(st.session_state.get("abl_limit", 200))
    spec = st.session_state["abl_set"]
    set_args = (model_name, weights, spec, base, limit) if spec else None
    imp_args = set_args if not FL.is_feature(layer) or not spec else \
        (model_name, weights, spec, layer, limit, str(run.path))

    labels = ({} if units_df is None else
              {int(u): f"{int(u)} · {lab or '—'} ({float(iou):.2f})" for u, lab, iou in
               zip(units_df["unit"], units_df["label"], units_df["iou"])})
    label_of = lambda u: labels.get(u, str(u))  # noqa: E731

    c1, c2, c3, c4 = st.columns([5, 3, 0.8, 0.8], vertical_alignment="bottom")
    word = FL.what_name(layer)
    c1.multiselect(f"{word.capitalize()} to ablate", list(range(k)), key=sel_key,
                   format_func=label_of, placeholder=f"Choose {word} (or pick them by concept "
                                                     "or class importance below)")
    with c2:
        mode, value, means = choose_mode(run, None if base != layer else set_args, layer)
    c3.button("Reset", key="abl_reset", on_click=_set_units, args=(sel_key, []))
    c4.button("Invert", key="abl_invert", on_click=_invert_units, args=(sel_key, k))
    units = list(st.session_state[sel_key])
    keep_units_in_url(units)
    try:
        iv = FL.lab_intervention(run, layer, units, mode, value, means)
    except USER_ERRORS as e:
        st.error(str(e))
        st.stop()
    steer = V.steer_picker(lm, base)
    ivs = [iv] + ([steer] if steer is not None else [])
    what = " + ".join(([iv.describe()] if units else []) + ([steer.describe()] if steer else []))
    st.caption(f"{len(units)} of {k} {word} selected · {what or iv.describe()}"
               + (f" · {layer_label(layer)}: the codes are edited and written back into "
                  f"`{base}` (x ← x + Σ (z′ − z)·decoder)" if base != layer else ""))

    # ---- the image and what the ablation does to it ----------------------------------------
    tops = []
    if arrays is not None:
        for u in units[:4]:
            tops += [(u, r, int(i)) for r, i in enumerate(arrays["topk_indices"][u][:4])]
    if V.PICK not in st.session_state:
        st.session_state[V.PICK] = ({"kind": "probe", "index": tops[0][2] if tops else 0}
                                    if images is not None and len(images) else
                                    {"kind": "sample", "name": L.SAMPLES[0]})
    pick = st.session_state[V.PICK]
    if pick["kind"] == "probe" and (images is None or not 0 <= pick["index"] < len(images)):
        pick = st.session_state[V.PICK] = {"kind": "sample", "name": L.SAMPLES[0]}
    result = None
    try:
        x, name = L.image_input(lm, pick, images, st.session_state.get("abl_upload_data"))
        # [iv] even with no units: the first view records the layer's replay, so the first
        # units change runs only the layers after it
        result = L.get_lab(model_name, weights).compare(x, ivs, path=name)
        after = ("After the ablation and steering" if units and steer else
                 "After steering" if steer else "After the ablation")
        V.effect_view(result, x.permute(1, 2, 0).numpy(), name, what, bool(what), after)
    except USER_ERRORS as e:
        st.error(str(e))
    with st.expander("Choose the image", expanded=True):
        thumb = None
        if images is not None:
            from studio.data import plain_image
            thumb = lambda i: plain_image(str(run.path), st_, int(i))  # noqa: E731
        V.image_gallery(str(run.path) if images is not None else None,
                        len(images) if images is not None else 0, thumb, tops, word[:-1])

    st.subheader("Choose units by concept or class importance")
    unit_pickers(run, units_df, imp_args, sel_key, k, lm)

    # ---- a labelled set ---------------------------------------------------------------------
    st.subheader("Per-class accuracy on a labelled set")
    c1, c2 = st.columns([3, 1])
    c1.text_input("Set", key="abl_set",
                  help="toyworld:N (ToyWorld scenes) or folder:DIR (ImageFolder layout)")
    c2.number_input("At most images", 10, L.LAB_MAX_SET, 200, key="abl_limit")
    set_result = None
    if set_args is not None:
        ready = JV.result(L.set_job(*set_args))
        if ready is not None:
            set_result = ready[1].evaluate(ivs if what else [])
    if set_result is not None:
        m1, m2 = st.columns(2)
        m1.metric("Accuracy before", f"{set_result.acc_before:.1%}")
        m2.metric("Accuracy after", f"{set_result.acc_after:.1%}",
                  delta=f"{set_result.acc_after - set_result.acc_before:+.1%}")
        st.dataframe(set_result.classes.drop(columns=["index"]), hide_index=True)
        most = set_result.most_changed(5)
        st.caption("Changed most: " + ", ".join(f"{r['class']} {r['delta']:+.1%}"
                                                 for _i, r in most.iterrows()))
    V.export(iv, units_df, result, set_result, run, model_name, weights, steer)


def _set_units(key: str, units: list[int]) -> None:
    st.session_state[key] = [int(u) for u in units]


def _invert_units(key: str, k: int) -> None:
    chosen = set(st.session_state.get(key, []))
    st.session_state[key] = [u for u in range(k) if u not in chosen]


with L.model_lock():
    main()
