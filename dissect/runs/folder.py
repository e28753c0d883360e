"""The run folder, read: open one, list a root, read its tables and arrays.

    run = open_run("runs/r18")               # RunError when missing / other version
    run.status, run.layers                   # "complete", ["layer3", "layer4"]
    run.units("layer4")                      # DataFrame: unit, category, label, concept, iou, ...
    run.iou("layer4")                        # float32 [units, concepts]; columns = run.concepts rows
    run.topk("layer4")["indices"]            # int64 [units, k] rows of run.images
    probe = open_run_probe(run)              # dissect.probes.registry: the probe, reopened
    for r in list_runs("runs"): print(r.path, r.status)

Writers are dissect.runs.writer (run.json's status: "complete" only after everything else is
on disk) and dissect.runs.atomic (temp file + rename, so a reader never sees half a file). Layout and schema: ../shared/DESIGN.md, "The run folder".
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dissect.errors import RunError
from dissect.runs.damage import repair_hint
from dissect.runs.schema import read_info


class Run:
    """A run folder, read lazily. Arrays are loaded on first use (acts is memory-mapped)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    # -- run.json
    @property
    def info(self) -> dict:
        """run.json as a dict (re-read each time: a running run rewrites it)."""
        return read_info(self.path)

    @property
    def damage(self) -> str | None:
        """Why run.json cannot be read (missing, not JSON, wrong shape), or None when it can."""
        try:
            read_info(self.path)
        except RunError as e:
            return str(e)
        return None

    @property
    def status(self) -> str:
        """running | complete | failed | cancelled, or "damaged" when run.json is unreadable."""
        try:
            return self.info.get("status", "unknown")
        except RunError:
            return "damaged"

    @property
    def config(self) -> dict:
        return self.info.get("config", {})

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def layers(self) -> list[str]:
        """Layers in config order that have a folder on disk."""
        layers = list(self.config.get("layers", []))
        feats = self.info.get("features") or {}
        for name, meta in feats.items() if isinstance(feats, dict) else ():   # L@sae512 after L
            base = meta.get("basis_of") if isinstance(meta, dict) else None
            if not isinstance(name, str) or "/" in name or "\\" in name or ".." in name:
                continue
            after = max((i for i, l in enumerate(layers) if l == base or
                         l.startswith(f"{base}@")), default=len(layers) - 1)
            layers.insert(after + 1, name)
        return [l for l in layers if (self.path / "layers" / l).is_dir()] or layers

    def layer_dir(self, layer: str) -> Path:
        d = self.path / "layers" / layer
        if not d.is_dir():
            raise RunError(f"run {self.path} has no layer '{layer}' (it has: "
                           f"{', '.join(self.layers) or 'none'}); pick one of those")
        return d

    def _need(self, path: Path) -> Path:
        if not os.path.lexists(path):
            raise RunError(f"{path} is missing (run status: {self.status}); run the same "
                           "`python -m dissect run ...` command again to resume it")
        return path

    def _read(self, path: Path, kind: str) -> Any:
        """The file `path` of this run read by dissect.runs.safe (kind: csv, npy, npz, mmap):
        RunError naming the file and the repair when it is missing, unsafe (a directory, FIFO,
        device, link out of the folder), too large, truncated or of the wrong kind."""
        from dissect.runs import safe
        self._need(path)
        opts = {"error": RunError, "owner": f"run '{self.name}'", "fix": repair_hint(self.path)}
        if kind == "csv":
            return safe.read_csv(path, self.path, **opts)
        if kind == "npz":
            return safe.read_npz(path, self.path, **opts)
        return safe.read_npy(path, self.path, mmap=kind == "mmap", **opts)

    # -- tables
    @cached_property
    def concepts(self) -> pd.DataFrame:
        """concept, name, category, images, pixels; row i = column i of iou.npy."""
        return self._read(self.path / "concepts.csv", "csv")

    @cached_property
    def images(self) -> pd.DataFrame:
        """index, path, split, width, height: the probe images in the order used."""
        return self._read(self.path / "images.csv", "csv")

    def units(self, layer: str) -> pd.DataFrame:
        """unit, category, label, concept, iou, threshold (+ per-category columns)."""
        path = self.layer_dir(layer) / "units.csv"
        df = self._read(path, "csv")
        missing = [c for c in ("unit", "category", "label", "iou") if c not in df.columns]
        bad = [c for c in ("unit", "iou", "threshold") if c in df.columns and not missing
               and _not_numbers(df[c], allow_nan=c != "unit")]
        inf = [c for c in ("unit", "iou", "threshold") if c in df.columns and not missing
               and not bad and np.isinf(pd.to_numeric(df[c], errors="coerce")).any()]
        if missing or bad or inf:
            what = (f"has no column {', '.join(missing)}" if missing
                    else f"has non-numbers in column {', '.join(bad)}" if bad
                    else f"has an infinite number in column {', '.join(inf)}")
            raise RunError(f"layers/{layer}/units.csv of run '{self.name}' {what}; "
                           f"{repair_hint(self.path)}")
        return _numeric(df)

    # -- arrays
    def iou(self, layer: str) -> np.ndarray:
        """float32 [units, concepts]."""
        return self._read(self.layer_dir(layer) / "iou.npy", "npy")

    def topk(self, layer: str) -> dict[str, np.ndarray]:
        """{"indices": int64 [units, k], "values": float32 [units, k], "maps": f16 [units,k,h,w]}."""
        return self._read(self.layer_dir(layer) / "topk.npz", "npz")

    def imgmax(self, layer: str) -> np.ndarray:
        """float32 [images, units]: each unit's max raw activation per image."""
        return self._read(self.layer_dir(layer) / "imgmax.npy", "npy")

    def hist(self, layer: str) -> dict[str, np.ndarray]:
        """{"edges": float32 [units, B+1], "counts": int64 [units, B]}."""
        return self._read(self.layer_dir(layer) / "hist.npz", "npz")

    def acts(self, layer: str) -> np.ndarray | None:
        """[images, units, h, w] raw activations, memory-mapped: the engine's cache itself (float32,
        or float16 with --cache-dtype float16), so `> T_k` gives its active pixels; None when not kept."""
        path = self.layer_dir(layer) / "acts.npy"
        return self._read(path, "mmap") if os.path.lexists(path) else None

    def thresholds(self, layer: str) -> np.ndarray:
        """float32 [units]: T_k."""
        return self.units(layer)["threshold"].to_numpy(np.float32)



_TEXT = ("label", "category", "formula", "formula_exact", "concept_name", "name")


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    """Columns that hold only numbers, "" or "nan" as numbers (NaN for the empty ones): a
    hand-edited "nan" never leaves a column of strings for a page to compare with floats."""
    for c in df.columns:
        if c in _TEXT or pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            continue
        num = pd.to_numeric(df[c], errors="coerce")
        blank = df[c].astype(str).str.strip().str.lower().isin(["", "nan"])
        if num.notna().any() and (num.notna() | blank).all():
            df[c] = num
    return df


def _not_numbers(col: pd.Series, allow_nan: bool) -> bool:
    num = pd.to_numeric(col, errors="coerce")
    empty = col.astype(str).str.strip().str.lower().isin(["", "nan"]) if allow_nan else False
    return bool((num.isna() & ~empty).any())


def open_run(path: str | os.PathLike) -> Run:
    """Open a run folder (any status); RunError when it is missing or from another version."""
    run = Run(path)
    read_info(run.path)
    return run


def list_runs(root: str | os.PathLike) -> list[Run]:
    """Every run folder directly under `root`, newest first; damaged ones included (their
    `status` is "damaged" and `damage` says why), so one bad folder hides no other."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs, updated = [], {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and os.path.lexists(d / "run.json"):
            run = Run(d)
            try:
                updated[d] = str(run.info.get("updated") or "")
            except RunError:
                updated[d] = ""
            runs.append(run)
    runs.sort(key=lambda r: updated[r.path], reverse=True)
    return runs
