"""The unit page's "what the network loses without this unit" (not a page).

    losses_section(run_path, stamp, layer, unit)

The classes whose accuracy drops most when the unit alone is removed, read from the importance
ranking of the layer over a labelled set (dissect.interventions.importance.rank_units). The ranking is
computed on request (one pass over the set; then shared with the ablation lab) and shown at once
when any page computed it already. "Ablate in the lab" opens the lab with ?units=UNIT.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from studio import job_view as JV
from studio import lab as L
from studio.nav import go as go_to


def _chart(losses, word: str = "unit") -> go.Figure:
    rows = losses.iloc[::-1]
    fig = go.Figure(go.Bar(x=-rows["acc_drop"], y=rows["class"], orientation="h",
                           marker_color="#d62728",
                           text=[f"{a:.0%} → {a - d:.0%}" for a, d in zip(rows["acc"], rows["acc_drop"])],
                           textposition="auto", hovertemplate="%{y}: %{text}<extra></extra>"))
    fig.update_layout(xaxis_title=f"accuracy change without this {word}", xaxis_tickformat=".0%",
                      height=120 + 26 * len(rows), margin=dict(l=10, r=10, t=10, b=10))
    return fig


def losses_section(run_path: str, stamp: str, layer: str, unit: int) -> None:
    from studio.data import get_run
    from studio.feature_lab import is_feature
    word = "feature" if is_feature(layer) else "unit"
    st.subheader(f"What the network loses without this {word}")
    model, weights = L.run_model(get_run(run_path, stamp))
    if "loss_set" not in st.session_state:
        st.session_state["loss_set"] = st.session_state.get("abl_set") or L.default_set(model)
    c1, c2, c3, c4 = st.columns([3, 1, 1.2, 1.4], vertical_alignment="bottom")
    spec = c1.text_input("Labelled set", key="loss_set",
                         help="toyworld:N (ToyWorld scenes) or folder:DIR (ImageFolder layout, "
                              "one sub-folder per class of the model)")
    limit = int(c2.number_input("At most images", 10, 5000, 200, key="loss_limit"))
    if c4.button("Ablate in the lab", key="ablate_in_lab", icon=":material/science:",
                 type="primary", width="stretch"):
        go_to("ablation", units=str(unit))
    if not spec:
        st.caption("Name a labelled set (for example toyworld:200 for ToyWorld models, or "
                   f"folder:DIR) to rank the classes this {word} matters for.")
        return
    key = (model, weights, spec, layer, limit) + ((run_path,) if word == "feature" else ())
    imp = L.cached_importance(*key)
    if imp is None:
        asked = st.session_state.get("loss_asked") == key or L.job_of("importance", key) is not None
        if not asked and not c3.button("Rank the classes", key="loss_compute", width="stretch",
                                       help=f"Removes every {word} of the layer alone over "
                                            "the set once (cached; the ablation lab shares it)"
                                            + (": through the write-back x ← x − z_k·decoder[k]"
                                               if word == "feature" else "")):
            st.caption(f"Not computed yet for {spec} (at most {limit} images).")
            return
        st.session_state["loss_asked"] = key
        imp = JV.result(L.importance_job(*key))
        if imp is None:
            return
    losses = imp.losses(unit, n=10)
    hurt = losses[losses["acc_drop"] > 0]
    if hurt.empty:
        st.info(f"No class of {spec} loses accuracy when {word} {unit} alone is removed "
                f"(largest logit drop: {losses['logit_drop'].max():.3g}).")
        return
    st.plotly_chart(_chart(hurt, word), key="loss_chart")
    st.caption(f"Accuracy (recall) per class on {spec}, {len(imp.baseline)} classes; {word} "
               f"{unit} zeroed alone" + (" (closed form, exact)" if imp.fast else "")
               + (" (its code set to 0 and written back into the layer)" if word == "feature"
                  else "") + ".")
    with st.expander("Table"):
        st.dataframe(losses, hide_index=True)
