"""Edit: rewrite a rule into a layer ("snowy sea ↦ sea"), beside fine-tuning; trace a concept.

Rewrites and traces run as background jobs (`python -m dissect rewrite|trace`) whose folders
live under the edits root ($DISSECT_EDITS, default: `edits/` beside the runs root). The edited
weights are saved there as weights.safetensors, loadable on New run and in the ablation lab.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dissect.errors import USER_ERRORS
from dissect.toyworld.styles import STYLES
from dissect.toyworld.world import OBJECTS, SCENES
from studio import common, jobs

LAYERS = ["conv3", "conv4", "conv5", "conv6"]
TRACE_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"]
ROOT = Path(__file__).resolve().parent.parent


def edits_root() -> Path:
    env = os.environ.get("DISSECT_EDITS")
    return Path(env).resolve() if env else common.runs_root().parent / "edits"


@st.cache_data(show_spinner="Rendering the exemplars…", max_entries=32)
def exemplar_images(concept: str, style: str, n: int, scene: str) -> list[tuple[np.ndarray, ...]]:
    from dissect.editing.evaluation import exemplars
    ex = exemplars(concept, style, n, seed=7, scene=scene)
    out = []
    for b in range(len(ex.index)):
        clean = (ex.clean[b].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        styled = (ex.styled[style][b].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        mask = clean.copy()
        m = ex.masks[b].numpy()
        mask[m] = (0.4 * mask[m] + 0.6 * np.array([255, 40, 40])).astype(np.uint8)
        out.append((clean, styled, mask, ex.index[b]))
    return out


def job_panel(job: Path, done: Path, label: str) -> str:
    """'running' | 'done' | 'failed' | 'none', with the log shown while it runs or failed."""
    if jobs.running_pid(job) is not None:
        st.info(f"{label} is running…")
        st.code(jobs.log_tail(job, 8) or "starting…")
        if st.button("Refresh", key=f"refresh-{job.name}"):
            st.rerun()
        return "running"
    if done.exists():
        return "done"
    if (job / jobs.LOG).exists():
        st.error(f"{label} stopped: " + (jobs.log_tail(job, 3) or "no output"))
        return "failed"
    return "none"


def start_job(job: Path, cmd: list[str]) -> None:
    try:
        (job / jobs.LOG).unlink(missing_ok=True)
        jobs.start(job, cmd, cwd=ROOT)
        st.rerun()
    except jobs.AlreadyRunning:
        st.warning("Another session is running this job already.")


def measures_panel(m: dict) -> None:
    """The protocol figure beside the whole-world net effect (edit.json's "measures")."""
    if not m:
        st.caption("This edit was saved before whole-world checks; run it again to see them.")
        return
    st.subheader("Two measures of the same edit")
    cols = st.columns(2)
    p = m.get("protocol")
    if p:
        cols[0].metric("Protocol: errors corrected", f"{p['corrected']:.0%}",
                       help="Santurkar et al. 2021")
        cols[0].caption(f"{p['errors_before']} → {p['errors_after']} errors on {p['images']} "
                        "held-out images that show the concept and that the clean model gets "
                        "right.")
    w = m.get("world")
    if not w:
        cols[1].caption("No whole-world check (--world-images 0).")
        return
    share = w["style_errors_corrected"]
    cols[1].metric("Whole unseen world: style-caused errors corrected",
                   f"{share:.0%}" if share == share else "n/a")
    cols[1].caption(f"Every image of world {w['world_seed']} ({w['world_images']}), clean and "
                    f"restyled ({w['restyle']}); the restyle costs the unedited model "
                    f"{w['style_errors'] * 100:.1f} points of accuracy. Reproduce with "
                    f"`{w['command']}`.")
    rows = [{"world": name, "accuracy before": w[name]["acc_before"],
             "after": w[name]["acc_after"], "images corrected": w[name]["corrected"],
             "images broken": w[name]["broken"]} for name in ("restyled", "clean")]
    st.dataframe(pd.DataFrame(rows).style.format({"accuracy before": "{:.1%}",
                                                  "after": "{:.1%}"}),
                 width="stretch", hide_index=True)


st.title("Edit")
st.caption("Teach a layer that a concept drawn in another style is still that concept (rank-one "
           "rewrite, Santurkar et al. 2021), and see where a concept matters (causal tracing).")
tab_rw, tab_tr = st.tabs(["Rewrite a rule", "Causal trace"])

with tab_rw:
    with_scene = [o for o in OBJECTS if any(o in v for v in SCENES.values())]
    c = st.columns(5)
    concept = c[0].selectbox("Concept", with_scene, index=with_scene.index("sea"), key="ed_concept")
    style = c[1].selectbox("Style", list(STYLES), key="ed_style")
    layer = c[2].selectbox("Layer", LAYERS, index=3, key="ed_layer")
    n = int(c[3].number_input("Exemplars", 1, 30, 3, key="ed_n",
                              help="more exemplars generalise better to the whole world "
                                   "(benchmarks/rewrite_variants.py)"))
    auto = c[4].checkbox("Rank by held-out gain", key="ed_auto",
                         help="rank 1, 2, 4 or 8: the one that wins back the most on a "
                              "validation world while losing at most 0.5 pt of clean accuracy")
    rank = "auto" if auto else int(c[4].number_input("Rank", 1, 16, 1, key="ed_rank"))
    scenes = [s for s, objs in SCENES.items() if concept in objs]
    scene = st.selectbox("Exemplar class", scenes, key="ed_scene")
    try:
        shown = exemplar_images(concept, style, n, scene)
    except USER_ERRORS as e:
        st.error(str(e))
        st.stop()
    for clean, styled, mask, idx in shown[:6]:
        cols = st.columns(3)
        cols[0].image(clean, caption=f"image {idx}: original (value)", width="stretch")
        cols[1].image(styled, caption=f"{concept} drawn as {style} (key)", width="stretch")
        cols[2].image(mask, caption=f"{concept} mask", width="stretch")
    name = f"{concept}-{style}-{layer}-{scene}-{n}-r{rank}"
    out, job = edits_root() / name, edits_root() / ".jobs" / name
    if len(shown) > 6:
        st.caption(f"… and {len(shown) - 6} more exemplars.")
    state = job_panel(job, out / "edit.json", "The rewrite")
    cmd = [sys.executable, "-m", "dissect", "rewrite", "--model", "toyworld", "--layer", layer,
           "--concept", concept, "--style", style, "--exemplars", str(n), "--class", scene,
           "--rank", str(rank),
           "--baseline", "finetune", "--out", str(out), "--overwrite", "--json"]
    if state != "running" and st.button("Run the rewrite" if state != "done" else "Run it again",
                                        type="primary", key="ed_run"):
        start_job(job, cmd)
    from dissect.editing.files import read_edit, read_trace
    from studio.guard import shown as guarded
    doc = guarded(read_edit, out) if state == "done" else None     # checked, never a traceback
    if doc is not None:
        f = doc["figures"]
        m = st.columns(3)
        m[0].metric("Clean accuracy, before", f"{f['clean_acc_before']:.1%}")
        m[1].metric("after the rewrite", f"{f['clean_acc_after']:.1%}",
                    f"{(f['clean_acc_after'] - f['clean_acc_before']) * 100:+.1f} pt")
        if "finetune_clean_acc_after" in f:
            m[2].metric("after fine-tuning", f"{f['finetune_clean_acc_after']:.1%}",
                        f"{(f['finetune_clean_acc_after'] - f['clean_acc_before']) * 100:+.1f} pt")
        measures_panel(doc.get("measures") or {})
        df = pd.DataFrame(doc["heldout"])
        table = df.pivot_table(index=["styles", "classes"], columns="method", values="corrected",
                               aggfunc="first")
        st.subheader("% of errors corrected on held-out restyled scenes")
        st.caption("Over new scenes that the clean model gets right on their original version. "
                   "Exemplar style vs the other styles; the exemplars' class vs other classes "
                   "that contain the concept.")
        st.dataframe(table.style.format("{:.0%}", na_rep="n/a"), width="stretch")
        with st.expander("Counts (errors before → after)"):
            st.dataframe(df, width="stretch", hide_index=True)
        weights = out / "weights.safetensors"
        st.success(f"Edited weights saved: `{weights}`. Load them on New run or in the ablation "
                   f"lab as weights `{weights}` (model toyworld); the original file is untouched.")
        st.download_button("Download weights.safetensors", weights.read_bytes(),
                           file_name=f"{name}.safetensors", key="ed_dl")

with tab_tr:
    pix = [o for o in OBJECTS]
    c = st.columns(4)
    t_concept = c[0].selectbox("Concept", pix, index=pix.index("sun"), key="tr_concept")
    t_n = int(c[1].number_input("Images", 2, 100, 10, key="tr_n"))
    t_corrupt = c[2].selectbox("Corruption", ["noise", "blur", "gray"], key="tr_corrupt")
    t_layers = c[3].multiselect("Layers", TRACE_LAYERS, default=TRACE_LAYERS, key="tr_layers")
    t_name = f"trace-{t_concept}-{t_corrupt}-{t_n}-{'_'.join(t_layers)}"
    t_job = edits_root() / ".jobs" / t_name
    t_out = edits_root() / "traces" / f"{t_name}.json"
    t_state = job_panel(t_job, t_out, "The trace")
    t_cmd = [sys.executable, "-m", "dissect", "trace", "--model", "toyworld", "--concept",
             t_concept, "--probe", "toyworld:200", "--seed", "1000", "--limit", str(t_n),
             "--corrupt", t_corrupt, "--layers", ",".join(t_layers), "--out", str(t_out)]
    if t_layers and t_state != "running" and st.button("Trace", type="primary", key="tr_run"):
        start_job(t_job, t_cmd)
    doc = guarded(read_trace, t_out) if t_state == "done" else None
    if doc is not None:
        st.caption(f"{doc['images']} images showing {t_concept}; p(clean top class) "
                   f"{doc['p_clean']:.3f} clean, {doc['p_corrupt']:.3f} corrupted ({t_corrupt}).")
        eff = pd.DataFrame([{"layer": r["layer"], "restore all positions": r["effect"],
                             "best single cell": r.get("max_cell_effect", np.nan)}
                            for r in doc["layers"]])
        fig = px.bar(eff.melt("layer", var_name="restored", value_name="indirect effect"),
                     x="layer", y="indirect effect", color="restored", barmode="group",
                     title="Indirect effect by layer")
        st.plotly_chart(fig, key="tr_bar")
        layers_done = [r["layer"] for r in doc["layers"] if "grid" in r]
        if layers_done and doc.get("per_image"):
            cc = st.columns(2)
            lay = cc[0].selectbox("Layer", layers_done, index=len(layers_done) - 1, key="tr_lay")
            pick = int(cc[1].number_input("Image", 0, len(doc["per_image"]) - 1, 0, key="tr_img"))
            item = doc["per_image"][pick]
            from dissect.toyworld.generate import render
            rgb = render(1000, int(item["row"])).rgb
            grid = np.array(item["grids"][lay])
            g = st.columns(2)
            g[0].image(rgb, caption=f"image {item['row']} of world 1000", width="stretch")
            heat = px.imshow(grid, color_continuous_scale="RdBu_r", zmin=-abs(grid).max(),
                             zmax=abs(grid).max(), title=f"{lay}: effect of restoring each cell")
            g[1].plotly_chart(heat, key="tr_heat")
            mean = np.array(next(r["grid"] for r in doc["layers"] if r["layer"] == lay))
            st.plotly_chart(px.imshow(mean, color_continuous_scale="Viridis",
                                      title=f"{lay}: mean effect by cell over the images"),
                            key="tr_mean")
