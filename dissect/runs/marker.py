"""What kind of folder this is, and whether `--overwrite` may remove it.

    prepare_out(out, "edit", overwrite=args.overwrite)   # refuse, or clear (only our own kind)
    ...write the folder (atomically)...
    stamp(out, "edit")                                    # out/.dissect-kind: {"kind": "edit"}
    kind_of(out)                                          # "edit" | "run" | ... | None | "other"

Every command that writes an output folder stamps it with its kind (run, edit, trace,
direction, features, visualisation). `--overwrite` removes a folder only when it holds this
command's kind: a typo that points `rewrite --out` at a run folder, a home directory or a data
set is refused, naming what is there. Folders written before the marker existed are known by
their own file (run.json, edit.json, direction.json, ...). Other commands call `prepare_out`
and `stamp` the same way.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dissect.errors import RunError

MARKER = ".dissect-kind"
KINDS = ("run", "edit", "trace", "direction", "features", "visualisation")
# folders written before the marker: the file that says what they are
_LEGACY = {"run": "run.json", "edit": "edit.json", "direction": "direction.json",
           "features": "features.json", "visualisation": "visualisation.json"}
KEEP = (".lock", "log.txt")   # a run's lock (held by the writer that clears the folder) and
                              # the app's log of the job writing it


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


class OverwriteRefused(RunError):
    """--overwrite pointed at a folder this command did not write."""


def stamp(folder: str | os.PathLike, kind: str) -> Path:
    """Write folder/.dissect-kind saying `kind` (atomically)."""
    from dissect.runs.atomic import write_bytes
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; one of {', '.join(KINDS)}")
    return write_bytes(Path(folder) / MARKER, (json.dumps({"kind": kind}) + "\n").encode())


def kind_of(folder: str | os.PathLike) -> str | None:
    """The folder's kind: its marker, else its legacy file; None when missing or empty, "other"
    for anything else (a file, a data set, a home directory, a damaged marker)."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return None
    if folder.is_symlink() or not folder.is_dir():
        return "other"
    marker = folder / MARKER
    if os.path.lexists(marker):
        from dissect.runs.safe import read_json
        try:
            kind = read_json(marker, folder, limit=4096).get("kind")
        except (RunError, AttributeError):
            return "other"
        return kind if kind in KINDS else "other"
    for kind, name in _LEGACY.items():
        if (folder / name).is_file() and not (folder / name).is_symlink():
            return kind
    try:
        entries = [p.name for p in folder.iterdir() if p.name not in KEEP]
    except OSError:
        return "other"
    return None if not entries else "other"


def describe(folder: str | os.PathLike) -> str:
    """A few words on what a folder holds, for refusals: 'a run folder', 'a folder holding
    3 entries (a.txt, b, c.png)'."""
    folder = Path(folder)
    kind = kind_of(folder)
    if kind is None:
        return "nothing"
    if kind != "other":
        return f"{_a(kind)} folder"
    if not folder.is_dir() or folder.is_symlink():
        return "a file" if folder.is_file() else "something that is not a folder"
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name not in KEEP)
    except OSError:
        return "a folder that cannot be listed"
    shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
    return f"a folder holding {len(names)} entr{'y' if len(names) == 1 else 'ies'} ({shown})"


def prepare_out(out: str | os.PathLike, kind: str, overwrite: bool = False,
                flag: str = "--out", clear: bool = True) -> bool:
    """Check `out` before a command writes a `kind` folder there.

    Returns True when `out` already holds a `kind` folder (cleared first when `overwrite` and
    `clear`), False when it is missing or empty. Raises OverwriteRefused when it holds anything
    else (whatever `overwrite` says), or a `kind` folder without `overwrite`."""
    out = Path(out)
    have = kind_of(out)
    if have is None:
        return False
    if have != kind:
        raise OverwriteRefused(
            f"{flag} {out} holds {describe(out)}, not {_a(kind)} folder; only {_a(kind)} "
            f"folder this command wrote is ever replaced: choose another {flag}")
    if not overwrite:
        raise OverwriteRefused(f"{flag} {out} already holds {_a(kind)} folder; choose another "
                               f"{flag} or pass --overwrite to replace it")
    if clear:
        remove(out, kind)
    return True


def remove(folder: str | os.PathLike, kind: str, keep: tuple[str, ...] = KEEP) -> None:
    """Empty `folder` (a `kind` folder, checked again here), keeping the names in `keep`."""
    folder = Path(folder)
    if kind_of(folder) != kind:
        raise OverwriteRefused(f"{folder} holds {describe(folder)}, not {_a(kind)} folder; "
                               "nothing removed")
    for p in folder.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


__all__ = ["MARKER", "KINDS", "OverwriteRefused", "stamp", "kind_of", "describe",
           "prepare_out", "remove"]
