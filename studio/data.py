"""Cached readers of run folders for the app (not a page).

    units = units_table(str(run.path), "layer4", stamp(run.path))
    jpeg = unit_overlay(str(run.path), stamp(run.path), "layer4", 17, 0)

Every cached function takes the run folder as a string plus its `stamp` (run.json's mtime), so
a rerun or resumed run is read afresh while browsing never touches the disk twice. Tables go
through st.cache_data; arrays and the renderer through st.cache_resource (shared, not copied).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dissect.runs.render import RunRenderer
from dissect.runs.folder import Run, open_run


def stamp(run_path: str | os.PathLike) -> str:
    """Changes whenever run.json is rewritten (status, progress, a rerun)."""
    try:
        return str(os.stat(Path(run_path) / "run.json").st_mtime_ns)
    except OSError:
        return "missing"


@st.cache_resource(max_entries=16, show_spinner=False)
def get_run(run_path: str, stamp: str) -> Run:
    """The Run object (its concepts/images tables are cached inside it)."""
    return open_run(run_path)


@st.cache_resource(max_entries=8, show_spinner=False)
def renderer(run_path: str, stamp: str) -> RunRenderer:
    """One renderer per run: probe set reopened once, pictures cached on disk."""
    return RunRenderer(get_run(run_path, stamp))


@st.cache_data(max_entries=32, show_spinner=False)
def units_table(run_path: str, layer: str, stamp: str) -> pd.DataFrame:
    """units.csv of a layer with `interpretable` added (IoU ≥ the run's threshold)."""
    run = get_run(run_path, stamp)
    df = run.units(layer)
    t = iou_threshold(run_path, stamp)
    df["label"] = df["label"].fillna("").astype(str)
    df["category"] = df["category"].fillna("none").astype(str)
    df["interpretable"] = df["iou"].fillna(0) >= t
    return df


@st.cache_data(max_entries=8, show_spinner=False)
def concepts_table(run_path: str, stamp: str) -> pd.DataFrame:
    return get_run(run_path, stamp).concepts.copy()


@st.cache_data(max_entries=8, show_spinner=False)
def images_table(run_path: str, stamp: str) -> pd.DataFrame:
    return get_run(run_path, stamp).images.copy()


def iou_threshold(run_path: str, stamp: str) -> float:
    cfg = get_run(run_path, stamp).config
    return float(cfg.get("iou_threshold") or 0.04)


@st.cache_resource(max_entries=16, show_spinner=False)
def layer_arrays(run_path: str, layer: str, stamp: str) -> dict[str, np.ndarray]:
    """iou, imgmax, topk (indices/values/maps), hist (edges/counts) of a layer; read once."""
    run = get_run(run_path, stamp)
    out: dict[str, np.ndarray] = {"iou": run.iou(layer), "imgmax": run.imgmax(layer)}
    out.update({f"topk_{k}": v for k, v in run.topk(layer).items()})
    try:
        out.update({f"hist_{k}": v for k, v in run.hist(layer).items()})
    except (ValueError, OSError):
        pass  # hist.npz is optional for browsing
    return out


@st.cache_resource(max_entries=16, show_spinner=False)
def null_arrays(run_path: str, layer: str, stamp: str) -> dict[str, np.ndarray]:
    """A --null run's null distributions of a layer (null.npz: observed, null, loc_observed,
    loc_null; dissect.trust.columns), {} when the run has none."""
    from dissect.runs.safe import read_npz
    path = get_run(run_path, stamp).layer_dir(layer) / "null.npz"
    if not os.path.lexists(path):
        return {}
    return read_npz(path, run_path, owner=f"run '{Path(run_path).name}'",
                    fix="run the dissection again with --null")


@st.cache_data(max_entries=4096, show_spinner=False)
def unit_overlay(run_path: str, stamp: str, layer: str, unit: int, rank: int) -> bytes:
    return renderer(run_path, stamp).unit_overlay(layer, unit, rank)


@st.cache_data(max_entries=4096, show_spinner=False)
def unit_strip(run_path: str, stamp: str, layer: str, unit: int, n: int = 4) -> bytes:
    return renderer(run_path, stamp).unit_strip_jpeg(layer, unit, n)


@st.cache_data(max_entries=4096, show_spinner=False)
def concept_overlay(run_path: str, stamp: str, index: int, concept: int, category: str) -> bytes:
    return renderer(run_path, stamp).concept_overlay(index, concept, category)


@st.cache_data(max_entries=1024, show_spinner=False)
def plain_image(run_path: str, stamp: str, index: int) -> bytes:
    return renderer(run_path, stamp).plain(index)


def layer_summary(run_path: str, stamp: str) -> pd.DataFrame:
    """Interpretable units per (layer, category) across all layers of a run."""
    run = get_run(run_path, stamp)
    rows = []
    for layer in run.layers:
        try:
            df = units_table(run_path, layer, stamp)
        except (ValueError, OSError):
            continue
        for cat, n in df[df.interpretable].groupby("category").size().items():
            rows.append({"layer": layer, "category": cat, "units": int(n),
                         "share": n / max(1, len(df))})
    return pd.DataFrame(rows, columns=["layer", "category", "units", "share"])
