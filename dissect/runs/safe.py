"""The one reader for files a run, edit or direction folder holds: regular files only, inside
the folder, of bounded size; every failure is the folder's own one-line error.

    info = read_json(run_dir / "run.json", run_dir, error=RunError, owner="run 'r18'")
    df = read_csv(path, run_dir, error=RunError, fix="run the same command again")
    arr = read_npy(path, run_dir, mmap=True)         # memory-mapped, no size cap
    arrays = read_npz(path, run_dir)                 # {name: array}, allow_pickle=False
    raw = read_bytes(path, folder, limit=1 << 20)

A folder is a thing someone may have sent you. So a name that is a directory, a FIFO (reading
it would block the server forever), a device (`/dev/zero` never ends), or a symlink that leaves
the folder is refused before it is opened; the file is opened with O_NONBLOCK and checked again
on its descriptor (no swap between check and open); at most `limit` bytes are read before
anything parses them; and every OSError, decode or parse error becomes `error(message)`,
naming the file relative to the folder and the fix. Never a traceback, never a hang.
"""
from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dissect.errors import RunError

MB = 1 << 20
JSON_LIMIT = 64 * MB       # run.json, edit.json, direction.json: a few kB in practice
CSV_LIMIT = 512 * MB       # units.csv, images.csv (millions of rows at most)
ARRAY_LIMIT = 4 * 1024 * MB    # iou, topk, imgmax, labels: loaded into memory (a zip bomb is not)
_PARSE_ERRORS = (ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError,
                 json.JSONDecodeError, RecursionError)


class UnsafeFile(RunError):
    """A folder entry that is not a regular file inside the folder (dir, FIFO, device, escape)."""


def _rel(path: Path, folder: Path | None) -> str:
    if folder is not None:
        try:
            return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(folder)))
        except ValueError:
            pass
    return path.name


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_file(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """`path` when it is a regular file whose real location is inside `folder`; else UnsafeFile
    (FileNotFoundError when it does not exist). Reads nothing."""
    path = Path(path)
    try:
        st = os.stat(path)                  # follows links: what would be read
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UnsafeFile(f"cannot be opened ({os.strerror(e.errno or 0) or type(e).__name__})"
                         ) from None
    if folder is not None:
        real, root = os.path.realpath(path), os.path.realpath(folder)
        if os.path.commonpath([real, root]) != root:
            raise UnsafeFile(f"is a link that leaves its folder (to {real})")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"is {_kind(st.st_mode)}, not a file")
    return path


def _open(path: Path, folder: Path | None) -> int:
    check_file(path, folder)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):        # swapped between the check and the open
        os.close(fd)
        raise UnsafeFile(f"is {_kind(st.st_mode)}, not a file")
    return fd


def _fail(path: Path, folder: Path | None, error: type[Exception], owner: str, fix: str,
          why: str) -> Exception:
    who = f" of {owner}" if owner else ""
    return error(f"{_rel(path, folder)}{who} cannot be read: {why}" + (f"; {fix}" if fix else ""))


def _why(e: BaseException) -> str:
    if isinstance(e, UnsafeFile):
        return str(e)
    if isinstance(e, FileNotFoundError):
        return "it is missing"
    if isinstance(e, OSError):
        return os.strerror(e.errno) if e.errno else type(e).__name__
    text = str(e).splitlines()[0][:120] if str(e) else ""
    return f"{type(e).__name__}" + (f": {text}" if text else "")


def read_bytes(path: str | os.PathLike, folder: str | os.PathLike | None = None, *,
               limit: int = JSON_LIMIT, error: type[Exception] = RunError, owner: str = "",
               fix: str = "") -> bytes:
    """The file's bytes (at most `limit`); `error` naming it when unsafe, unreadable or larger."""
    path, folder = Path(path), (Path(folder) if folder is not None else None)
    try:
        fd = _open(path, folder)
        with os.fdopen(fd, "rb") as f:
            data = _read_upto(f, limit + 1)
    except (OSError, RunError) as e:
        raise _fail(path, folder, error, owner, fix, _why(e)) from None
    if len(data) > limit:
        raise _fail(path, folder, error, owner, fix, f"it is larger than {limit // MB} MB")
    return data


def _read_upto(f, n: int) -> bytes:
    """At most `n` bytes of `f`, allocating about the file's size, not `n`: f.read(n) allocates
    n bytes up front (512 MB for every CSV read under CSV_LIMIT), so the file's size leads and
    the rest, if it grew meanwhile, follows in pieces."""
    first = f.read(min(n, os.fstat(f.fileno()).st_size + 1))
    if len(first) >= n or not first:
        return first
    parts, got = [first], len(first)
    while got < n:
        more = f.read(min(n - got, 1 << 20))
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_json(path: str | os.PathLike, folder: str | os.PathLike | None = None, *,
              limit: int = JSON_LIMIT, error: type[Exception] = RunError, owner: str = "",
              fix: str = "") -> Any:
    """Parsed JSON (NaN/Infinity refused); `error` naming the file on any failure."""
    data = read_bytes(path, folder, limit=limit, error=error, owner=owner, fix=fix)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except _PARSE_ERRORS as e:
        raise _fail(Path(path), folder and Path(folder), error, owner, fix,
                    f"not valid JSON ({_why(e)})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_csv(path: str | os.PathLike, folder: str | os.PathLike | None = None, *,
             limit: int = CSV_LIMIT, error: type[Exception] = RunError, owner: str = "",
             fix: str = "", **kwargs):
    """pandas.read_csv of the file's bytes (keep_default_na=False unless given)."""
    import pandas as pd
    data = read_bytes(path, folder, limit=limit, error=error, owner=owner, fix=fix)
    kwargs.setdefault("keep_default_na", False)
    try:
        return pd.read_csv(io.BytesIO(data), **kwargs)
    except (*_PARSE_ERRORS, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise _fail(Path(path), folder and Path(folder), error, owner, fix,
                    f"not a readable table ({_why(e)})") from None


def read_npy(path: str | os.PathLike, folder: str | os.PathLike | None = None, *,
             mmap: bool = False, limit: int = ARRAY_LIMIT, error: type[Exception] = RunError,
             owner: str = "", fix: str = "") -> np.ndarray:
    """One .npy (allow_pickle=False); memory-mapped read-only with `mmap` (no size cap then)."""
    path, folder = Path(path), (Path(folder) if folder is not None else None)
    try:
        fd = _open(path, folder)
        with os.fdopen(fd, "rb") as f:
            if not mmap and os.fstat(f.fileno()).st_size > limit:
                raise UnsafeFile(f"it is larger than {limit // MB} MB")
            if mmap:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            return np.load(f, allow_pickle=False)
    except (OSError, RunError, *_PARSE_ERRORS) as e:
        raise _fail(path, folder, error, owner, fix, _why(e)) from None


def read_npz(path: str | os.PathLike, folder: str | os.PathLike | None = None, *,
             limit: int = ARRAY_LIMIT, error: type[Exception] = RunError, owner: str = "",
             fix: str = "") -> dict[str, np.ndarray]:
    """Every array of an .npz, loaded (allow_pickle=False; uncompressed size capped)."""
    path, folder = Path(path), (Path(folder) if folder is not None else None)
    try:
        fd = _open(path, folder)
        with os.fdopen(fd, "rb") as f:
            with zipfile.ZipFile(f) as z:
                if sum(i.file_size for i in z.infolist()) > limit:
                    raise UnsafeFile(f"it unpacks to more than {limit // MB} MB")
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (OSError, RunError, *_PARSE_ERRORS) as e:
        raise _fail(path, folder, error, owner, fix, _why(e)) from None


__all__ = ["check_file", "read_bytes", "read_json", "read_csv", "read_npy", "read_npz",
           "UnsafeFile", "JSON_LIMIT", "CSV_LIMIT", "ARRAY_LIMIT"]
