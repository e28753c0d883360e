"""Cached models, labelled sets, unit means and importance for the ablation lab and the unit
page (not a page).

    with model_lock():                                  # hooks edit the shared model object
        lm = get_model("resnet18", "none")
        lab = get_lab("resnet18", "none")               # dissect.ablation.ImageAblation, shared
        imp = get_importance("toyworld", "default", "toyworld:200", "conv6", 200)
    cached_importance(...same key...)                   # the ranking if computed, else None

Every model-side result is a st.cache_resource shared by all sessions, so the unit page sees a
ranking the lab computed and the other way round.
"""
from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dissect.ablation import ImageAblation, open_image
from dissect.models import is_model_file, list_layers, load_model

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "camera")   # skimage.data, offline
PRESETS = {"efficientnet_lite0 (real ImageNet weights)": ("efficientnet_lite0", "DEFAULT"),
           "toyworld (scene CNN)": ("toyworld", "default"),
           "resnet18 (random init)": ("resnet18", "none")}
MAX_RANKINGS = 8


@st.cache_resource
def model_lock() -> threading.RLock:
    """Hooks and replays edit the shared model object: one page run at a time uses it."""
    return threading.RLock()


LAB_MAX_SET = 5000          # toyworld:N / folder images a set may hold here (it runs in the server)


@st.cache_resource(show_spinner="Loading the model…")
def get_model(name: str, weights: str):
    """The model; a file.py:factory only once the user has confirmed it (confirm_model_file)."""
    return load_model(name, weights, allow_file=name in _trusted())


def _trusted() -> list[str]:
    return st.session_state.setdefault("abl_trusted_files", [])


def confirm_model_file(name: str) -> None:
    """A run folder's model that is a Python file runs code: show the path, ask, else stop."""
    if not is_model_file(name) or name in _trusted():
        return
    st.warning(f"This run's model is Python code: **`{name}`**. Loading it imports that file "
               "and runs it inside this server, with your permissions. Import it only if you "
               "trust the file and whoever sent you this run folder.")
    if st.button("I trust this file: import it", key="abl_trust_file"):
        _trusted().append(name)
        st.rerun()
    st.stop()


@st.cache_resource
def get_lab(name: str, weights: str) -> ImageAblation:
    return ImageAblation(get_model(name, weights))


@st.cache_data(show_spinner=False)
def get_layers(name: str, weights: str) -> list[tuple[str, int]]:
    """(layer, units) of every spatial layer of the model."""
    return [(l.name, l.shape[0]) for l in list_layers(get_model(name, weights)) if l.spatial]


def run_model(run) -> tuple[str, str]:
    """(model, weights) a run was made with."""
    cfg = run.config
    return cfg.get("model", "resnet18"), str(cfg.get("weights", "none"))


def default_set(model_name: str) -> str:
    """The labelled set a model is evaluated on when none is named: ToyWorld scenes for the
    ToyWorld CNN, none otherwise."""
    return "toyworld:200" if model_name == "toyworld" else ""


def lab_run():
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


# ---- labelled sets, means, importance --------------------------------------------------------

@st.cache_resource(show_spinner="Running the labelled set through the model once…")
def get_set(name: str, weights: str, spec: str, layer: str, limit: int):
    """(LabelledSet, SetCache over `layer`)."""
    from dissect.labelled import SetCache, open_labelled_set
    lm = get_model(name, weights)
    lset = open_labelled_set(spec, lm, limit=limit, max_images=LAB_MAX_SET)
    return lset, SetCache(lm, lset, [layer])


@st.cache_resource(show_spinner="Computing the units' means over the probe set…")
def get_means(run_path: str, layer: str):
    """Unit means from the run's acts.npy (None when it kept none)."""
    from dissect.ablation import means_from_run
    from dissect.runs import open_run
    return means_from_run(open_run(run_path), layer)


@st.cache_resource(show_spinner="Computing the units' means over the labelled set…")
def get_set_means(name: str, weights: str, spec: str, layer: str, limit: int):
    from dissect.ablation import unit_means
    lset, _ = get_set(name, weights, spec, layer, limit)
    return unit_means(get_model(name, weights), layer, (x for _i, x in lset.batches(32)))


@st.cache_resource
def _rankings() -> dict:
    return {}


def cached_importance(name: str, weights: str, spec: str, layer: str, limit: int):
    """The importance ranking of this key when some page computed it already, else None."""
    return _rankings().get((name, weights, spec, layer, int(limit)))


def get_importance(name: str, weights: str, spec: str, layer: str, limit: int):
    """dissect.importance.rank_units over the labelled set (computed once, then shared)."""
    from dissect.importance import rank_units
    key = (name, weights, spec, layer, int(limit))
    store = _rankings()
    if key not in store:
        with model_lock(), st.spinner("Ranking every unit for every class (each removed alone)…"):
            lset, _ = get_set(name, weights, spec, layer, int(limit))
            imp = rank_units(get_model(name, weights), lset, layer)
        while len(store) >= MAX_RANKINGS:
            store.pop(next(iter(store)))
        store[key] = imp
    return store[key]


@st.cache_data(show_spinner="Removing the top-N units of every class, and keeping only them…")
def get_curve(name: str, weights: str, spec: str, layer: str, limit: int, ns: tuple, by: str):
    from dissect.importance import control_curve
    lset, _ = get_set(name, weights, spec, layer, limit)
    imp = get_importance(name, weights, spec, layer, limit)
    return control_curve(get_model(name, weights), lset, imp, list(ns), by=by)


# ---- images the lab feeds the model ----------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=16)
def sample_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo from scikit-image's bundled data (chelsea, coffee, ...)."""
    import skimage.data
    if name not in SAMPLES:
        raise ValueError(f"no sample photo '{name}'")
    arr = getattr(skimage.data, name)()
    return arr if arr.ndim == 3 else np.stack([arr] * 3, -1)


@st.cache_data(show_spinner=False, max_entries=16)
def sample_thumb(name: str, side: int = 160) -> bytes:
    from PIL import Image
    img = Image.fromarray(sample_photo(name))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def fit(lm, img) -> torch.Tensor:
    """Probe images are fed at their stored size when it is the model's, else resized/cropped."""
    import torchvision.transforms.v2.functional as TF
    if img.size == (lm.input_size, lm.input_size):
        return TF.to_dtype(TF.to_image(img), torch.float32, scale=True)
    return lm.prepare(img)


def image_input(lm, pick: dict, images: pd.DataFrame | None,
                upload: tuple[str, bytes] | None) -> tuple[torch.Tensor, str]:
    """(3×S×S tensor in [0, 1], its name) for a pick {"kind": probe|sample|upload, ...};
    AblationError for an unreadable image."""
    from PIL import Image
    if pick["kind"] == "probe":
        path = str(images.iloc[int(pick["index"])]["path"])
        return fit(lm, open_image(path, name=f"probe image {pick['index']}")), path
    if pick["kind"] == "upload" and upload is not None:
        return lm.prepare(open_image(io.BytesIO(upload[1]), name=upload[0])), upload[0]
    name = pick.get("name", SAMPLES[0])
    return lm.prepare(Image.fromarray(sample_photo(name))), f"skimage:{name}"
