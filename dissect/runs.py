"""The run folder: write atomically, read, list, resume.

    run = open_run("runs/r18")               # RunError when missing / other version
    run.status, run.layers                   # "complete", ["layer3", "layer4"]
    run.units("layer4")                      # DataFrame: unit, category, label, concept, iou, ...
    run.iou("layer4")                        # float32 [units, concepts]; columns = run.concepts rows
    run.topk("layer4")["indices"]            # int64 [units, k] rows of run.images
    probe = run.probe()                      # the probe set, reopened from run.json
    for r in list_runs("runs"): print(r.path, r.status)

Every file is written to a temporary name in the same folder and renamed into place, so a
reader never sees half a file. `run.json`'s status says "complete" only after everything else
is on disk. Layout and schema: ../shared/DESIGN.md, "The run folder".
"""
from __future__ import annotations

import datetime as _dt
import errno
import io
import json
import os
import tempfile
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from dissect.errors import RunError

FORMAT_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK        # what open() would give; mkstemp's temp files are 0600
STATUSES = ("running", "complete", "failed", "cancelled")


# ----------------------------------------------------------------------------- atomic writes
def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call `write(fileobj)` on a temp file next to `path`, fsync, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def reserve(path: str | os.PathLike) -> None:
    """Allocate a (memory-mapped) file's blocks now, so a full disk raises ENOSPC here rather
    than killing the process with SIGBUS on a later write through the map."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(e.errno, e.strerror, str(path)) from None
            # filesystems without fallocate: carry on


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write raw bytes."""
    return atomic_write(path, lambda f: f.write(data))


def write_torch(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically torch.save plain tensors and types. Serialised in memory first: torch's zip
    writer turns a full disk into a bare RuntimeError, a plain write raises ENOSPC naming it."""
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write JSON (indented, UTF-8)."""
    data = json.dumps(obj, indent=1, default=_json_default).encode()
    return write_bytes(path, data)


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Atomically write a DataFrame as CSV without the index."""
    return write_bytes(path, df.to_csv(index=False).encode())


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write one array as .npy."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array)))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Atomically write several arrays as an uncompressed .npz."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def now_iso() -> str:
    """UTC time as ISO 8601, seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ----------------------------------------------------------------------------- reading
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
        if not path.exists():
            raise RunError(f"{path} is missing (run status: {self.status}); run the same "
                           "`python -m dissect run ...` command again to resume it")
        return path

    def _read(self, path: Path, read: Callable[[Path], Any]) -> Any:
        """read(path) for a file of this run; RunError naming the file and the repair when it
        is missing, truncated or of the wrong kind (never a raw numpy/zip/pandas error)."""
        self._need(path)
        try:
            return read(path)
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile,
                pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            from dissect.damage import repair_hint
            rel = path.relative_to(self.path) if path.is_relative_to(self.path) else path.name
            raise RunError(f"{rel} of run '{self.name}' cannot be read ({type(e).__name__}); "
                           f"{repair_hint(self.path)}") from None

    # -- tables
    @cached_property
    def concepts(self) -> pd.DataFrame:
        """concept, name, category, images, pixels; row i = column i of iou.npy."""
        return self._read(self.path / "concepts.csv", _csv)

    @cached_property
    def images(self) -> pd.DataFrame:
        """index, path, split, width, height: the probe images in the order used."""
        return self._read(self.path / "images.csv", _csv)

    def units(self, layer: str) -> pd.DataFrame:
        """unit, category, label, concept, iou, threshold (+ per-category columns)."""
        path = self.layer_dir(layer) / "units.csv"
        df = self._read(path, _csv)
        missing = [c for c in ("unit", "category", "label", "iou") if c not in df.columns]
        bad = [c for c in ("unit", "iou", "threshold") if c in df.columns and not missing
               and _not_numbers(df[c], allow_nan=c != "unit")]
        if missing or bad:
            from dissect.damage import repair_hint
            what = (f"has no column {', '.join(missing)}" if missing
                    else f"has non-numbers in column {', '.join(bad)}")
            raise RunError(f"layers/{layer}/units.csv of run '{self.name}' {what}; "
                           f"{repair_hint(self.path)}")
        return df

    # -- arrays
    def iou(self, layer: str) -> np.ndarray:
        """float32 [units, concepts]."""
        return self._read(self.layer_dir(layer) / "iou.npy", np.load)

    def topk(self, layer: str) -> dict[str, np.ndarray]:
        """{"indices": int64 [units, k], "values": float32 [units, k], "maps": f16 [units,k,h,w]}."""
        return self._read(self.layer_dir(layer) / "topk.npz", _npz)

    def imgmax(self, layer: str) -> np.ndarray:
        """float32 [images, units]: each unit's max raw activation per image."""
        return self._read(self.layer_dir(layer) / "imgmax.npy", np.load)

    def hist(self, layer: str) -> dict[str, np.ndarray]:
        """{"edges": float32 [units, B+1], "counts": int64 [units, B]}."""
        return self._read(self.layer_dir(layer) / "hist.npz", _npz)

    def acts(self, layer: str) -> np.ndarray | None:
        """float16 [images, units, h, w] raw activations, memory-mapped; None when not kept."""
        path = self.layer_dir(layer) / "acts.npy"
        return self._read(path, lambda p: np.load(p, mmap_mode="r")) if path.exists() else None

    def thresholds(self, layer: str) -> np.ndarray:
        """float32 [units]: T_k."""
        return self.units(layer)["threshold"].to_numpy(np.float32)

    # -- probe
    def probe(self):
        """Reopen the probe set this run used (same spec and options, same image order)."""
        from dissect.probe import open_probe
        cfg = self.config
        spec = cfg.get("probe")
        if not spec:
            raise RunError(f"{self.path / 'run.json'} has no config.probe; rerun the dissection")
        opts = {k: v for k, v in (cfg.get("probe_options") or {}).items() if v is not None}
        return open_probe(spec, **opts)


def _not_numbers(col: pd.Series, allow_nan: bool) -> bool:
    num = pd.to_numeric(col, errors="coerce")
    empty = col.astype(str).str.strip().str.lower().isin(["", "nan"]) if allow_nan else False
    return bool((num.isna() & ~empty).any())


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def read_info(path: str | os.PathLike) -> dict:
    """run.json of a run folder, checked for format version; RunError with the fix otherwise."""
    path = Path(path)
    f = path / "run.json"
    if not f.exists():
        raise RunError(f"{path} is not a run folder (no run.json); create one with "
                       f"`python -m dissect run ... --out {path}`")
    try:
        info = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{f} is not valid JSON ({e}); delete the folder and run again") from None
    version = info.get("format_version") if isinstance(info, dict) else None
    if isinstance(info, dict) and version != FORMAT_VERSION:
        raise RunError(f"{f} has format_version {version!r}, this version reads "
                       f"{FORMAT_VERSION}; rerun the dissection with this version")
    from dissect.runinfo import check_info
    return check_info(info, str(f))


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
        if d.is_dir() and (d / "run.json").exists():
            run = Run(d)
            try:
                updated[d] = str(run.info.get("updated") or "")
            except RunError:
                updated[d] = ""
            runs.append(run)
    runs.sort(key=lambda r: updated[r.path], reverse=True)
    return runs


# ----------------------------------------------------------------------------- writing
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
