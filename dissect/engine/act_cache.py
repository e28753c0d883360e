"""The on-disk activation cache of a dissection, read and written in bounded chunks.

    cache = ActCache.create(path, np.float32, (n, k, h, w))   # a .npy file, blocks reserved
    cache = ActCache.open(path)                              # reuse one (resume)
    cache[lo:hi] = batch                                     # pwrite: nothing stays mapped
    a = cache[lo:hi]; b = cache[idx]; m = cache[idx, u]      # pread: fresh arrays
    keep_as(cache, run / "layers/conv6/acts.npy")            # a hard link, no copy

A memory map would be simpler, but every page it reads or writes counts in the process's
resident memory until the kernel reclaims it, so a dissection of 63k images looked like a leak
in `top` (and peak RSS grew with the probe set). Reading with `os.pread` into a fresh buffer
and writing with `os.pwrite` keeps resident memory to one batch, whatever the probe's size.
The file stays a plain .npy (header + C-order rows) that `np.load(mmap_mode="r")` reads.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dissect.runs.atomic import FILE_MODE, reserve


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a .npy file, reading no data."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if major == 1
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
        return tuple(shape), fortran, dtype, f.tell()


class ActCache:
    """Rows of a C-order .npy file on disk, indexed like an array on the first axis."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int):
        self.path, self.dtype, self.shape, self.offset = Path(path), np.dtype(dtype), shape, offset
        self.row_shape = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR)

    # -- opening
    @classmethod
    def create(cls, path: str | os.PathLike, dtype, shape: tuple[int, ...]) -> "ActCache":
        """A new cache file of `shape` (zeros), its blocks reserved on disk."""
        path = Path(path)
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False, "shape": tuple(shape)})
            offset = f.tell()
            f.truncate(offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        reserve(path)
        return cls(path, dtype, tuple(shape), offset)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ActCache":
        """An existing cache file (its header read, no data)."""
        shape, _fortran, dtype, offset = npy_header(path)
        return cls(Path(path), dtype, tuple(shape), offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()

    def __len__(self) -> int:
        return self.shape[0]

    def flush(self) -> None:
        """Writes go straight to the file (pwrite); nothing is buffered here."""

    # -- rows
    def _runs(self, rows: np.ndarray):
        """(start, length, position in `rows`) of each run of consecutive rows."""
        if len(rows) == 0:
            return
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.r_[0, breaks]
        ends = np.r_[breaks, len(rows)]
        for s, e in zip(starts, ends):
            yield int(rows[s]), int(e - s), int(s)

    def _rows(self, key) -> tuple[np.ndarray, bool]:
        if isinstance(key, slice):
            return np.arange(*key.indices(self.shape[0]), dtype=np.int64), True
        if np.isscalar(key):
            return np.array([int(key)], np.int64), False
        rows = np.asarray(key, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        return rows, True

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """A fresh array [len(rows), ...] of those rows (any order, repeats allowed)."""
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"rows out of range for {self.path.name} ({self.shape[0]} rows)")
        order = np.argsort(rows, kind="stable")
        data = np.empty((len(rows),) + self.row_shape, self.dtype)
        raw = data.reshape(len(rows), -1).view(np.uint8) if data.size else None
        for start, n, pos in self._runs(rows[order]):
            want = n * self.row_bytes
            got = os.preadv(self._fd, [memoryview(raw[pos:pos + n]).cast("B")],
                            self.offset + start * self.row_bytes)
            if got != want:
                raise OSError(f"{self.path} is shorter than its header says (read {got} of "
                              f"{want} bytes at row {start})")
        if np.array_equal(order, np.arange(len(rows))):
            return data
        out = np.empty_like(data)
        out[order] = data
        return out

    def unit_maps(self, rows: np.ndarray, unit: int) -> np.ndarray:
        """[len(rows), h, w]: one unit's map on each of `rows`, reading only those bytes."""
        sub = self.row_shape[1:]
        size = int(np.prod(sub, dtype=np.int64)) * self.dtype.itemsize
        out = np.empty((len(rows),) + sub, self.dtype)
        for i, r in enumerate(np.asarray(rows, np.int64)):
            if not 0 <= r < self.shape[0]:
                raise IndexError(f"row {r} out of range for {self.path.name}")
            buf = os.pread(self._fd, size, self.offset + int(r) * self.row_bytes + unit * size)
            out[i] = np.frombuffer(buf, self.dtype).reshape(sub)
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and np.isscalar(key[1]) \
                and not isinstance(key[0], slice) and not np.isscalar(key[0]):
            return self.unit_maps(key[0], int(key[1]))
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        rows, keep_axis = self._rows(first)
        out = self.read_rows(rows)
        if not keep_axis:
            out = out[0]
        return out[(slice(None),) * keep_axis + rest] if rest else out

    def __setitem__(self, key, value) -> None:
        rows, _ = self._rows(key)
        value = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype),
                                                     (len(rows),) + self.row_shape))
        order = np.argsort(rows, kind="stable")
        srt, data = rows[order], value[order]
        flat = data.reshape(len(rows), -1).view(np.uint8) if data.size else None
        for start, n, pos in self._runs(srt):
            view = memoryview(flat[pos:pos + n]).cast("B")
            os.pwrite(self._fd, view, self.offset + start * self.row_bytes)


def keep_as(cache, dest: str | os.PathLike) -> None:
    """Put the cache at `dest` as a .npy of its own dtype: a hard link when it is a file (no
    copy, atomic); else the array written whole, or, for any other row-sliceable source (an
    ActCache on another filesystem, a view that computes rows), copied in chunks of rows into a
    temp file that is then renamed."""
    dest = Path(dest)
    source = cache.path if isinstance(cache, ActCache) else getattr(cache, "filename", None)
    if source is not None:
        tmp = dest.with_name(f".{dest.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
            os.replace(tmp, dest)
            return
        except OSError:
            tmp.unlink(missing_ok=True)       # another filesystem: copy in chunks below
    if isinstance(cache, np.ndarray) and not isinstance(cache, np.memmap):
        from dissect.runs.atomic import write_npy
        write_npy(dest, cache)
        return
    import tempfile
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        out = ActCache.create(name, np.dtype(cache.dtype), tuple(cache.shape))
        for s in range(0, len(cache), 256):
            out[s:s + 256] = np.asarray(cache[s:s + 256])
        out.close()
        os.chmod(name, FILE_MODE)
        os.replace(name, dest)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
