"""The writer of one run folder: run.json's status and progress, and the result files.

    w = RunWriter(out, config)        # creates/reuses the folder, status "running"
    w.progress("forward", 10, 500)    # throttled rewrite of run.json (every ~2 s)
    w.write_npy("layers/layer4/iou.npy", iou)
    w.finish(counts=...)              # status "complete" only here
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dissect.runs.atomic import now_iso, write_csv, write_json, write_npy, write_npz
from dissect.runs.schema import FORMAT_VERSION


class RunWriter:
    """Writes one run folder: run.json updates (status, progress) and atomic files.

        w = RunWriter(out, config)        # creates/reuses the folder, status "running"
        w.progress("forward", 10, 500)    # throttled rewrite of run.json (every ~2 s)
        w.write_npy("layers/layer4/iou.npy", iou)
        w.finish(counts=...)              # status "complete" only here
    """

    def __init__(self, path: str | os.PathLike, config: dict, *, versions: dict | None = None,
                 progress_every: float = 2.0):
        import time
        self._time = time.monotonic
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        old = {}
        if (self.path / "run.json").exists():
            try:
                old = json.loads((self.path / "run.json").read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                old = {}
        if not isinstance(old, dict) or not isinstance(old.get("created"), (str, type(None))):
            old = {}
        self.info = {
            "format_version": FORMAT_VERSION,
            "status": "running",
            "config": config,
            "versions": versions or {},
            "counts": {},
            "progress": {"phase": "forward", "done": 0, "total": 0},
            "timings": {},
            "error": None,
            "created": old.get("created") or now_iso(),
            "updated": now_iso(),
        }
        self.progress_every = progress_every
        self._last = 0.0
        self.save()

    def save(self) -> None:
        self.info["updated"] = now_iso()
        write_json(self.path / "run.json", self.info)

    def progress(self, phase: str, done: int, total: int, force: bool = False) -> None:
        """Record progress; rewrites run.json at most every `progress_every` seconds."""
        self.info["progress"] = {"phase": phase, "done": int(done), "total": int(total)}
        t = self._time()
        if force or t - self._last >= self.progress_every:
            self._last = t
            self.save()

    def file(self, rel: str) -> Path:
        return self.path / rel

    def write_json(self, rel: str, obj: Any) -> Path:
        return write_json(self.path / rel, obj)

    def write_csv(self, rel: str, df: pd.DataFrame) -> Path:
        return write_csv(self.path / rel, df)

    def write_npy(self, rel: str, array: np.ndarray) -> Path:
        return write_npy(self.path / rel, array)

    def write_npz(self, rel: str, **arrays: np.ndarray) -> Path:
        return write_npz(self.path / rel, **arrays)

    def finish(self, **updates: Any) -> None:
        """Mark complete (call only after every file is written)."""
        self.info.update(updates)
        self.info["status"] = "complete"
        self.info["error"] = None
        self.save()

    def fail(self, error: BaseException | str, status: str = "failed") -> None:
        """Mark failed/cancelled with the error message; never raises (best effort)."""
        self.info["status"] = status
        if isinstance(error, str):
            self.info["error"] = error
        else:
            self.info["error"] = str(error) or type(error).__name__
        try:
            self.save()
        except OSError:
            pass
