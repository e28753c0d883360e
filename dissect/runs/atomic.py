"""Atomic writes: every file of a run, edit or direction folder appears whole or not at all.

    write_json(out / "run.json", info)          # temp file in the same folder, fsync, rename
    write_npy(out / "iou.npy", iou); write_csv(out / "units.csv", df)
    atomic_write(path, lambda f: f.write(data)) # any writer

A reader never sees half a file; a full disk raises OSError naming the file.
"""
from __future__ import annotations

import datetime as _dt
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK        # what open() would give; mkstemp's temp files are 0600


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
