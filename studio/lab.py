"""Cached models, labelled sets, unit means and importance for the ablation lab and the unit
page (not a page).

    with model_lock():                                  # hooks edit the shared model object
        lm = get_model("resnet18", "none")
        lab = get_lab("resnet18", "none")               # dissect.interventions.ablation.ImageAblation, shared
    job = importance_job("toyworld", "default", "toyworld:200", "conv6", 200)   # background
    imp = job_view.result(job)                          # the ranking, or None (progress drawn)
    cached_importance(...same key...)                   # the ranking if computed, else None

Every model-side result is shared by all sessions (st.cache_resource, or a finished background
job), so the unit page sees a ranking the lab computed and the other way round.
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

from dissect.interventions.ablation import ImageAblation, open_image
from dissect.models.registry import is_model_file, list_layers, load_model
from studio import background as bg

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "camera")   # skimage.data, offline
PRESETS = {"efficientnet_lite0 (real ImageNet weights)": ("efficientnet_lite0", "DEFAULT"),
           "toyworld (scene CNN)": ("toyworld", "default"),
           "resnet18 (random init)": ("resnet18", "none")}


@st.cache_resource
def model_lock() -> threading.RLock:
    """Hooks and replays edit the shared model object: one page run at a time uses it."""
    return threading.RLock()


UPLOAD_MAX_PIXELS = 25_000_000   # an upload decodes to at most 75 MB of RGB in the server
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
    from dissect.runs.folder import list_runs
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


# ---- labelled sets, means, importance: background jobs (studio.background) ------------------
# Each runs in its own thread on its own copy of the model (the page keeps the shared one), so a
# page run never waits on it, Cancel stops it at its next batch, and a stopping server does not
# wait for it. Results are shared by every session, like st.cache_resource.

def _job_model(name: str, weights: str):
    """A private copy of the cached model for one job's thread (hooks on it touch no page)."""
    import copy
    with model_lock():
        return copy.deepcopy(get_model(name, weights))


class _Watched:
    """A LabelledSet whose passes report to a job (and stop once it is cancelled)."""

    def __init__(self, lset, job: bg.Job, what: str):
        self._lset, self._job, self._what = lset, job, what

    def __len__(self) -> int:
        return len(self._lset)

    def __getattr__(self, name: str):
        return getattr(self._lset, name)

    def batches(self, batch_size: int):
        done = 0
        for idx, x01 in self._lset.batches(batch_size):
            self._job.step(done, len(self._lset), self._what)
            yield idx, x01
            done += len(x01)


def _open_set(lm, spec: str, limit: int, job: bg.Job):
    from dissect.interventions.labelled import open_labelled_set
    return open_labelled_set(spec, lm, limit=limit, max_images=LAB_MAX_SET, list_folders=False,
                             progress=lambda d, t: job.step(d, t, f"building toyworld ({t:,} "
                                                                  "images, cached on disk)"))


def _submit(kind: str, key: tuple, label: str, work) -> bg.Job:
    job = job_of(kind, key)
    if job is not None:           # failed or cancelled ones too, until "Try again" forgets them
        return job
    lm = _job_model(key[0], key[1])
    return bg.submit((kind, *key), lambda job: work(job, lm), label)


def job_of(kind: str, key: tuple) -> bg.Job | None:
    """The job of that kind ("set", "means", "importance", "curve") and key, if any page
    started one."""
    return bg.find((kind, *key))


def set_job(name: str, weights: str, spec: str, layer: str, limit: int) -> bg.Job:
    """The job whose result is (LabelledSet, SetCache over `layer`)."""
    from dissect.interventions.labelled import SetCache

    def work(job, lm):
        lset = _open_set(lm, spec, limit, job)
        return lset, SetCache(lm, _Watched(lset, job, "running the set through the model"),
                              [layer])
    return _submit("set", (name, weights, spec, layer, int(limit)),
                   f"Labelled set {spec} (at most {limit} images)", work)


def set_means_job(name: str, weights: str, spec: str, layer: str, limit: int) -> bg.Job:
    """The job whose result is the units' means over the labelled set."""
    from dissect.interventions.ablation import unit_means

    def work(job, lm):
        lset = _Watched(_open_set(lm, spec, limit, job), job, "unit means")
        return unit_means(lm, layer, (x for _i, x in lset.batches(32)))
    return _submit("means", (name, weights, spec, layer, int(limit)),
                   f"Unit means over {spec}", work)


@st.cache_resource(max_entries=64, show_spinner=False)
def saved_direction(folder: str, mtime_ns: int):
    """A direction saved under <runs>/directions/, read once per version of its files."""
    from dissect.directions.concept import load_direction
    return load_direction(folder)


@st.cache_resource(show_spinner="Computing the units' means over the probe set…")
def get_means(run_path: str, layer: str):
    """Unit means from the run's acts.npy (None when it kept none)."""
    from dissect.interventions.ablation import means_from_run
    from dissect.runs.folder import open_run
    return means_from_run(open_run(run_path), layer)


def cached_importance(name: str, weights: str, spec: str, layer: str, limit: int,
                      run_path: str | None = None):
    """The importance ranking of this key when some page computed it already, else None."""
    job = bg.find(("importance", name, weights, spec, layer, int(limit))
                  + ((run_path,) if run_path else ()))
    return job.result if job is not None and job.state == "done" else None


def importance_job(name: str, weights: str, spec: str, layer: str, limit: int,
                   run_path: str | None = None) -> bg.Job:
    """The job whose result is dissect.interventions.importance.rank_units over the labelled
    set; for a feature layer (with `run_path`, the run that holds it)
    dissect.features.importance.rank_features: each feature removed alone by the write-back."""
    from dissect.interventions.importance import rank_units

    def work(job, lm):
        lset = _Watched(_open_set(lm, spec, limit, job), job, "first pass over the set")
        step = lambda d, t: job.step(d, t, f"removing each {what} alone")  # noqa: E731
        if run_path:
            from dissect.features.importance import rank_features
            from dissect.runs.folder import open_run
            return rank_features(lm, lset, open_run(run_path), layer, progress=step)
        return rank_units(lm, lset, layer, progress=step)
    what = "feature" if run_path else "unit"
    return _submit("importance", (name, weights, spec, layer, int(limit))
                   + ((run_path,) if run_path else ()),
                   f"Ranking every {what} for every class (each removed alone)", work)


def curve_job(imp, name: str, weights: str, spec: str, layer: str, limit: int, ns: tuple,
              by: str) -> bg.Job:
    """The job whose result is dissect.interventions.importance.control_curve for ranking `imp`."""
    from dissect.interventions.importance import control_curve

    def work(job, lm):
        lset = _Watched(_open_set(lm, spec, limit, job), job, "the set through the model")
        return control_curve(lm, lset, imp, list(ns), by=by, progress=lambda d, t: job.step(
            d, t, "removing each class's top N, and keeping only them"))
    return _submit("curve", (name, weights, spec, layer, int(limit), tuple(ns), by),
                   "Control curve", work)


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
        return lm.prepare(open_image(io.BytesIO(upload[1]), name=upload[0],
                                     max_pixels=UPLOAD_MAX_PIXELS)), upload[0]
    name = pick.get("name", SAMPLES[0])
    return lm.prepare(Image.fromarray(sample_photo(name))), f"skimage:{name}"
