"""The unit page's links between units and dictionary features (not a page).

    feature_links_section(run_path, stamp, layer, unit)

On a feature of a feature layer (`conv6@sae512`): the units that build it, i.e. its largest
|decoder| weights over the layer's channels, each a link to that unit's page. On a unit of a
layer that has feature layers: the features that use it most (largest |decoder[:, unit]|).
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from dissect.features.layer import layer_label, parse_feature_layer
from studio.nav import page_link

TOP = 8


@st.cache_resource(max_entries=16, show_spinner=False)
def _decoder(run_path: str, layer: str, stamp: str) -> np.ndarray | None:
    from dissect.features.basis import Basis
    from dissect.errors import FeatureError
    from pathlib import Path
    try:
        return Basis.load(Path(run_path) / "layers" / layer).decoder.numpy()
    except FeatureError:
        return None


def _labels(run, layer: str) -> dict[int, str]:
    try:
        df = run.units(layer)
    except Exception:   # a damaged table only hides the labels here
        return {}
    return {int(u): str(l) for u, l in zip(df["unit"], df["label"])}


def feature_links_section(run_path: str, stamp: str, layer: str, unit: int) -> None:
    from studio.data import get_run
    run = get_run(run_path, stamp)
    parsed = parse_feature_layer(layer)
    if parsed is not None:
        dec = _decoder(run_path, layer, stamp)
        if dec is None or not 0 <= unit < len(dec):
            return
        st.subheader("Units that build this feature")
        w = dec[unit]
        order = np.argsort(-np.abs(w))[:TOP]
        labels = _labels(run, parsed[0])
        st.caption(f"Largest |decoder| weights of feature {unit} over the {len(w)} units of "
                   f"`{parsed[0]}` (the feature's direction is decoder[{unit}]).")
        cols = st.columns(4)
        for j, u in enumerate(order):
            with cols[j % 4]:
                page_link("unit", label=f"unit {int(u)} · {labels.get(int(u), '')} · "
                          f"{w[u]:+.2f}", layer=parsed[0], unit=int(u))
        return
    feats = [name for name in run.layers if (parse_feature_layer(name) or ("",))[0] == layer]
    if not feats:
        return
    st.subheader("Features that use this unit")
    for name in feats:
        dec = _decoder(run_path, name, stamp)
        if dec is None or not 0 <= unit < dec.shape[1]:
            continue
        col = dec[:, unit]
        order = np.argsort(-np.abs(col))[:TOP]
        labels = _labels(run, name)
        st.caption(f"{layer_label(name)}: largest |decoder[k, {unit}]|")
        cols = st.columns(4)
        for j, k in enumerate(order):
            with cols[j % 4]:
                page_link("unit", label=f"feature {int(k)} · {labels.get(int(k), '')} · "
                          f"{col[k]:+.2f}", layer=name, unit=int(k))
