"""Is a run folder that says "complete" really whole? Which files are missing or wrong.

    problems = check_run("runs/r18")      # [] or ["layers/layer4/iou.npy: 12 bytes, truncated", ...]
    repair_hint("runs/r18")               # the command that rebuilds it

Arrays are checked by their .npy header and file size (no data read); tables by their header
and row count. Shapes follow run.json's counts: images, concepts, units per layer.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dissect.errors import RunError


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else \
        np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return tuple(shape), np.dtype(dtype), f.tell()


def _present(path: Path, problems: list[str], rel: str) -> bool:
    """Whether `path` is a regular file inside the run folder (dissect.runs.safe); else the
    problem (missing, a directory, a FIFO, a device, a link out of the folder) is added."""
    from dissect.runs.safe import check_file
    run_dir = path.parents[len(Path(rel).parts) - 1]
    try:
        check_file(path, run_dir)
    except FileNotFoundError:
        problems.append(f"{rel} is missing")
        return False
    except RunError as e:
        problems.append(f"{rel} {e}")
        return False
    return True


def _check_npy(path: Path, shape: tuple, problems: list[str], rel: str) -> None:
    if not _present(path, problems, rel):
        return
    try:
        with open(path, "rb") as f:
            got, dtype, offset = _npy_header(f)
    except (ValueError, OSError, EOFError) as e:
        problems.append(f"{rel} is not a readable .npy ({type(e).__name__})")
        return
    want = offset + int(np.prod(got)) * dtype.itemsize
    if path.stat().st_size != want:
        problems.append(f"{rel} is truncated ({path.stat().st_size} of {want} bytes)")
    elif any(w is not None and g != w for g, w in zip(got, shape)) or len(got) != len(shape):
        problems.append(f"{rel} has shape {list(got)}, expected "
                        f"[{', '.join('*' if w is None else str(w) for w in shape)}]")


def _check_npz(path: Path, keys: dict[str, tuple], problems: list[str], rel: str) -> None:
    if not _present(path, problems, rel):
        return
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            for key, shape in keys.items():
                if f"{key}.npy" not in names:
                    problems.append(f"{rel} has no array '{key}'")
                    continue
                with z.open(f"{key}.npy") as f:
                    got, _, _ = _npy_header(f)
                if len(got) != len(shape) or any(w is not None and g != w
                                                 for g, w in zip(got, shape)):
                    problems.append(f"{rel}['{key}'] has shape {list(got)}")
            bad = z.testzip()
            if bad:
                problems.append(f"{rel} is corrupt ({bad})")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        problems.append(f"{rel} is not a readable .npz ({type(e).__name__})")


def _rows(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            return max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        return None


def check_run(path: str | Path) -> list[str]:
    """Problems of a run folder's result files (empty when whole); RunError if run.json is bad."""
    from dissect.runs.schema import read_info
    path = Path(path)
    info = read_info(path)
    counts, cfg = info.get("counts") or {}, info["config"]
    n_img, n_con = counts.get("images"), counts.get("concepts")
    units = counts.get("units") or {}
    problems: list[str] = []
    for table, n in (("concepts.csv", n_con), ("images.csv", n_img)):
        rows = _rows(path / table) if _present(path / table, problems, table) else False
        if rows is None:
            problems.append(f"{table} cannot be read")
        elif rows is not False and n is not None and rows != n:
            problems.append(f"{table} has {rows} rows, expected {n}")
    for layer in cfg["layers"]:
        d, rel = path / "layers" / layer, f"layers/{layer}"
        k = units.get(layer)
        rows = _rows(d / "units.csv") if _present(d / "units.csv", problems,
                                                    f"{rel}/units.csv") else False
        if rows is None:
            problems.append(f"{rel}/units.csv cannot be read")
        elif rows is not False and k is not None and rows != k:
            problems.append(f"{rel}/units.csv has {rows} rows, expected {k}")
        _check_npy(d / "iou.npy", (k, n_con), problems, f"{rel}/iou.npy")
        _check_npy(d / "imgmax.npy", (n_img, k), problems, f"{rel}/imgmax.npy")
        _check_npz(d / "topk.npz", {"indices": (k, None), "values": (k, None),
                                    "maps": (k, None, None, None)}, problems, f"{rel}/topk.npz")
        if (d / "acts.npy").exists() or cfg.get("keep_acts", True):
            _check_npy(d / "acts.npy", (n_img, k, None, None), problems, f"{rel}/acts.npy")
    return problems


def repair_hint(path: str | Path) -> str:
    """What to run to rebuild a damaged complete run (the cache is gone once a run completes)."""
    path = Path(path)
    if (path / "cache").is_dir():
        return "run the same `python -m dissect run ...` command again to rebuild it from its cache"
    return "run the same `python -m dissect run ...` command again with --overwrite to recompute it"


def require_whole(path: str | Path) -> None:
    """RunError naming every damaged file and the repair command, if there is any."""
    problems = check_run(path)
    if problems:
        raise RunError(f"{Path(path)} says complete but is damaged: {'; '.join(problems[:6])}"
                       f"{' …' if len(problems) > 6 else ''}. To repair: {repair_hint(path)}")
