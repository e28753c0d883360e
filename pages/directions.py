"""Directions: a concept's direction at a layer (mean, PCA or probe), its readout by layer,
TCAV with significance, and steering along it (one image before/after, a dose–response curve on
a set with a random control). Save the direction under the runs root or export it as JSON."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from studio import common

ctx = common.context()
st.title("Directions")
st.caption("Concept directions in a layer's activation space (ITI mass-mean, RepE PCA, a "
           "TCAV-style probe), pooled as the network's own head pools. Contrast sets come from a "
           "probe: images with vs without the concept's pixels.")


def _errors():
    from dissect.errors import USER_ERRORS
    return USER_ERRORS


def get_model(name: str, weights: str):
    """The lab's shared model: a file.py:factory only after confirm_model_file (issue 21)."""
    from studio.lab import get_model as lab_model
    return lab_model(name, weights)


@st.cache_data(show_spinner=False)
def get_layers(name: str, weights: str) -> list[str]:
    from dissect.models.registry import list_layers
    return [i.name for i in list_layers(get_model(name, weights)) if i.spatial]


@st.cache_resource(show_spinner="Computing the direction over the probe…")
def get_direction(name, weights, probe_spec, pair, concept, layer, method, pooling):
    from dissect.directions.concept import contrast_from_probe, fit
    from dissect.probes.registry import open_probe
    from dissect.probes.registry import toyworld_size
    from studio.lab import LAB_MAX_SET
    lm = get_model(name, weights)
    opts = {"pair": pair} if pair else {}
    if str(probe_spec).startswith("toyworld"):
        toyworld_size(probe_spec, cap=LAB_MAX_SET)     # it runs in the server: bounded
    else:
        opts["limit"] = LAB_MAX_SET
    c = contrast_from_probe(lm, open_probe(probe_spec, **opts), concept, layer, pooling)
    d = fit(c, method)
    d.model, d.weights = lm.name, str(lm.weights)
    return d


@st.cache_resource(show_spinner="Opening the labelled set…")
def get_set(name, weights, spec, require="", exclude=""):
    from dissect.interventions.labelled import open_labelled_set
    from dissect.directions.presence import select
    from studio.lab import LAB_MAX_SET
    lset = open_labelled_set(spec, get_model(name, weights), max_images=LAB_MAX_SET,
                             list_folders=False)
    names = lambda t: [s.strip() for s in t.split(",") if s.strip()]   # noqa: E731
    return select(lset, names(require), names(exclude))


@st.cache_data(show_spinner="Fitting a linear head per layer…")
def get_readout(name, weights, spec, layers: tuple, concept: str) -> dict:
    from dissect.directions.readout import readout
    lm = get_model(name, weights)
    return readout(lm, get_set(name, weights, spec), list(layers), dola=True,
                   concepts=[concept] if spec.startswith("toyworld") else [])


@st.cache_data(show_spinner="TCAV: fitting concept and random CAVs…")
def get_tcav(name, weights, spec, layer, concepts: tuple, target, runs) -> list[dict]:
    from dissect.probes.broden import BrodenProbe
    from dissect.errors import DirectionError
    from dissect.directions.tcav import tcav
    lm = get_model(name, weights)
    lset = get_set(name, weights, spec)
    if getattr(lset.source, "directory", None) is None:
        raise DirectionError("TCAV here needs a ToyWorld set (concept images come from its pixels)")
    res = tcav(lm, layer, list(concepts), target, lset, BrodenProbe(lset.source.directory), runs)
    return [r.to_json() for r in res]


@st.cache_data(show_spinner="Steering the set at each α (the prefix runs once)…")
def get_dose(_d, key, name, weights, spec, require, exclude, alphas: tuple, units) -> dict:
    from dissect.directions.steering import dose_response, parse_top
    lm = get_model(name, weights)
    lset = get_set(name, weights, spec, require, exclude)
    res = dose_response(lm, _d, (x for _i, x in lset.batches(32)), alphas,
                        parse_top(units, _d), random=3)
    return {"alphas": list(alphas), "images": len(lset),
            "classes": res.classes_json(res.p_mean), "random": {"classes": res.classes_json(res.random_p_mean)}}


cfg = {}
if ctx.entry is not None and ctx.entry.status == "complete":
    from studio.data import get_run, stamp
    try:
        cfg = get_run(str(ctx.entry.path), stamp(ctx.entry.path)).config
    except _errors():
        cfg = {}
run_model = cfg.get("model") or "toyworld"
c1, c2, c3 = st.columns(3)
model = c1.text_input("Model", value=run_model, key="dir_model")
weights = c2.text_input("Weights", value=cfg.get("weights") or ("default" if model == "toyworld"
                                                                   else "none"), key="dir_weights")
probe_default = cfg.get("probe") if str(cfg.get("probe", "")).startswith(("toyworld", "broden")) \
    else "toyworld:300"
probe_spec = c3.text_input("Probe (contrast set)", value=probe_default, key="dir_probe",
                           help="toyworld:N, broden:DIR: images with vs without the concept")
from studio.lab import confirm_model_file
confirm_model_file(model)         # a file.py:factory (from a shared run) runs code: ask first
try:
    lm = get_model(model, weights)
    layers = get_layers(model, weights)
except _errors() as err:
    st.error(str(err))
    st.stop()
if not layers:
    st.error(f"{model} has no layer with a spatial output; pick another model")
    st.stop()
c1, c2, c3, c4 = st.columns(4)
concept = c1.text_input("Concept", value="sun", key="dir_concept",
                        help="a concept name of the probe (e.g. a run's unit label)")
default_layer = ctx.layer if ctx.layer in layers else layers[-1]
layer = c2.selectbox("Layer", layers, index=layers.index(default_layer), key="dir_layer")
method = c3.radio("Method", ["mean", "pca", "probe"], horizontal=True, key="dir_method")
pooling = c4.selectbox("Pooling", ["auto", "max", "mean", "spatial"], key="dir_pooling",
                       help="auto: as the network's head pools (max for ToyWorld, mean for ResNets)")
pair = st.text_input("Paired renders (ToyWorld object, optional)", value="", key="dir_pair",
                     help="draw each probe scene with and without this object").strip() or None

if st.button("Compute direction", key="dir_compute", type="primary"):
    st.session_state["dir_ready"] = True
if not st.session_state.get("dir_ready"):
    st.info("Choose a concept, a layer and a probe, then **Compute direction**.")
    st.stop()
try:
    d = get_direction(model, weights, probe_spec, pair, concept, layer, method, pooling)
except _errors() as err:
    st.error(str(err))
    st.stop()
m1, m2, m3, m4 = st.columns(4)
m1.metric("held-out AUROC", f"{d.auroc_heldout:.3f}")
m2.metric("norm", f"{d.norm:.3g}")
m3.metric("σ of projections", f"{d.sigma:.3g}")
m4.metric("with / without", f"{d.n_pos} / {d.n_neg}")
st.caption(f"{d.concept} at {d.layer} · {d.method} · {d.pooling} pooling · {d.source}")

set_default = "toyworld:300" if model == "toyworld" else ""
spec = st.text_input("Labelled set (readout, TCAV, steering)", value=set_default, key="dir_set",
                     help="toyworld:N or folder:DIR (ImageFolder layout)")
results: dict = {"direction": d.to_json()}
t_read, t_tcav, t_steer, t_pic, t_save = st.tabs(["Readout by layer", "TCAV", "Steer", "Picture",
                                                  "Save / export"])

with t_read:
    chosen = st.multiselect("Layers", layers, default=layers[-6:], key="dir_read_layers")
    if st.button("Read out", key="dir_read_go") or st.session_state.get("dir_read_done"):
        st.session_state["dir_read_done"] = True
    if chosen and spec and st.session_state.get("dir_read_done"):
        try:
            r = get_readout(model, weights, spec, tuple(l for l in layers if l in chosen), concept)
        except _errors() as err:
            st.error(str(err))
        else:
            results["readout"] = r
            fig = go.Figure()
            xs = [row["layer"] for row in r["layers"]]
            fig.add_scatter(x=xs, y=[row["acc_heldout"] for row in r["layers"]],
                            mode="lines+markers", name="class accuracy (held out)")
            if any(row.get("auroc", {}).get(concept) is not None for row in r["layers"]):
                fig.add_scatter(x=xs, y=[row["auroc"].get(concept) for row in r["layers"]],
                                mode="lines+markers", name=f"{concept} AUROC")
            fig.add_hline(y=r["final_acc"], line_dash="dot", annotation_text="model output")
            fig.update_layout(height=340, yaxis_range=[0, 1.02], margin=dict(t=20, b=20),
                              xaxis_title="layer", yaxis_title="held-out score")
            st.plotly_chart(fig, width="stretch")
            o, dl = r["overthinking"], r["dola"]
            st.caption(f"Overthinking: {o['early_right']} of {o['errors']} final errors had an "
                       f"earlier head right ({o['rate']:.0%}). DoLa contrast accuracy "
                       f"{dl['acc']:.1%} vs the final output's {dl['final_acc']:.1%}.")

with t_tcav:
    c1, c2, c3 = st.columns(3)
    target = c1.selectbox("Target class", list(lm.class_names),
                          index=list(lm.class_names).index("beach") if "beach" in lm.class_names else 0,
                          key="dir_target")
    extra = c2.text_input("Concepts", value=f"{concept},checkered", key="dir_tcav_concepts")
    runs = c3.slider("Random runs", 5, 50, 20, key="dir_tcav_runs")
    if st.button("Run TCAV", key="dir_tcav_go") or st.session_state.get("dir_tcav_done"):
        st.session_state["dir_tcav_done"] = True
        names = tuple(c.strip() for c in extra.split(",") if c.strip())
        try:
            tc = get_tcav(model, weights, spec, layer, names, target, runs)
        except _errors() as err:
            st.error(str(err))
        else:
            results["tcav"] = tc
            fig = go.Figure()
            fig.add_bar(x=[t["concept"] for t in tc], y=[t["score"] for t in tc], name="concept",
                        text=["★ significant" if t["significant"] else "not significant"
                              for t in tc], textposition="outside")
            fig.add_bar(x=[t["concept"] for t in tc],
                        y=[float(np.mean(t["random_scores"])) for t in tc], name="random CAVs")
            fig.update_layout(height=340, yaxis_range=[0, 1.15], barmode="group",
                              yaxis_title=f"TCAV score for {target}", margin=dict(t=20, b=20))
            st.plotly_chart(fig, width="stretch")
            st.dataframe(pd.DataFrame([{k: t[k] for k in ("concept", "score", "p_value",
                                                          "significant", "threshold")}
                                       for t in tc]), hide_index=True)

with t_steer:
    from dissect.directions.steering import steered_logits
    try:
        lset = get_set(model, weights, spec) if spec else None
    except _errors() as err:
        st.error(str(err))
        lset = None
    if lset is not None and len(lset):
        c1, c2 = st.columns([1, 2])
        idx = c1.number_input("Image of the set", 0, len(lset) - 1, 0, key="dir_img")
        alpha = c1.slider("α (multiples of σ)", -8.0, 8.0, 4.0, 0.5, key="dir_alpha")
        x = lset.load(int(idx))[None]
        before = torch.softmax(steered_logits(lm, d, x, 0.0), 1)[0]
        after = torch.softmax(steered_logits(lm, d, x, alpha), 1)[0]
        c1.image(x[0].permute(1, 2, 0).numpy(), caption=f"{lset.paths[int(idx)]} · "
                 f"true {lm.class_names[int(lset.labels[int(idx)])]}", width="stretch")
        order = torch.argsort(after, descending=True)[:5].tolist()
        c2.dataframe(pd.DataFrame({"class": [lm.class_names[j] for j in order],
                                   "before": [float(before[j]) for j in order],
                                   "after": [float(after[j]) for j in order]}),
                     hide_index=True, column_config={
                         "before": st.column_config.ProgressColumn(min_value=0, max_value=1),
                         "after": st.column_config.ProgressColumn(min_value=0, max_value=1)})
        st.subheader("Dose–response on the set")
        c1, c2, c3, c4 = st.columns(4)
        cls = c1.selectbox("Class", list(lm.class_names), index=list(lm.class_names).index(target),
                           key="dir_dose_class")
        alphas_text = c2.text_input("α values", "0,1,2,4,8", key="dir_alphas")
        require = c3.text_input("Images with", "sea,boat" if concept == "sun" else "",
                                key="dir_with")
        exclude = c4.text_input("and without", concept, key="dir_without")
        units = st.text_input("Units (ITI top:K, empty = all)", "", key="dir_units").strip() or None
        if st.button("Dose–response", key="dir_dose_go") or st.session_state.get("dir_dose_done"):
            st.session_state["dir_dose_done"] = True
            from dissect.directions.steering import parse_alphas
            try:
                alphas = tuple(parse_alphas(alphas_text))
                dose = get_dose(d, (model, weights, probe_spec, pair, concept, layer, method,
                                    pooling), model, weights, spec, require, exclude, alphas, units)
            except _errors() as err:
                st.error(str(err))
            else:
                results["steer"] = dose
                j = list(lm.class_names).index(cls)
                fig = go.Figure()
                fig.add_scatter(x=dose["alphas"], y=dose["classes"][j]["p_mean"],
                                mode="lines+markers", name=f"+α·σ·{concept}")
                fig.add_scatter(x=dose["alphas"], y=dose["random"]["classes"][j]["p_mean"],
                                mode="lines+markers", name="random, same norm",
                                line=dict(dash="dash"))
                fig.update_layout(height=340, yaxis_range=[0, 1], xaxis_title="α",
                                  yaxis_title=f"mean p({cls}) over {dose['images']} images",
                                  margin=dict(t=20, b=20))
                st.plotly_chart(fig, width="stretch")

with t_pic:
    from studio import vis_view
    vis_view.direction_section(model, weights, d, (probe_spec, pair, concept, layer, method,
                                                   pooling))

with t_save:
    name = st.text_input("Save as", value=f"{concept}-{layer}-{method}", key="dir_save_name")
    if st.button("Save direction", key="dir_save"):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}", name or ""):
            st.error("Use letters, digits, '-', '_' or '.' for the name (no slashes)")
        else:
            from dissect.directions.concept import save_direction
            out = save_direction(d, ctx.root / "directions" / name)
            st.success(f"Saved to {out}: steer with `python -m dissect steer --direction {out} "
                       "--set toyworld:300 --json`; in the ablation lab, "
                       "`dissect.directions.steering.SteerIntervention` adds it as an intervention.")
    st.download_button("Export JSON", json.dumps(results, indent=2), file_name=f"{name}.json",
                       mime="application/json", key="dir_export")
