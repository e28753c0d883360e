"""Reading an edit folder and a trace file back, checked (the Edit page and scripts use these).

    doc = read_edit("edits/sea-snow")        # edit.json, with weights.safetensors' hash checked
    doc = read_trace("edits/traces/t.json")  # a `trace --out` file

Both go through dissect.runs.safe (regular files inside the folder, bounded size); a damaged,
swapped or hostile file is one RewriteError/TraceError naming the file and the command that
writes it again, never a traceback and never advice to re-run a dissection.
"""
from __future__ import annotations

import os
from pathlib import Path

from dissect.errors import RewriteError, TraceError

EDIT_FIX = "run the rewrite again (python -m dissect rewrite ... --out DIR --overwrite)"
TRACE_FIX = "run the trace again (python -m dissect trace ... --out FILE)"


def weights_digest(path: str | os.PathLike) -> str:
    """The hash edit.json records for its weights.safetensors."""
    from dissect.runs.digest import file_sha256
    return file_sha256(path)


def read_edit(folder: str | os.PathLike) -> dict:
    """edit.json of an edit folder, checked: an object with `figures` (finite numbers) and, when
    it records `weights_sha256`, a weights.safetensors of that hash."""
    from dissect.runs import safe
    from dissect.runs.digest import first_non_finite
    folder = Path(folder)
    opts = {"error": RewriteError, "owner": f"edit '{folder.name}'", "fix": EDIT_FIX}
    doc = safe.read_json(folder / "edit.json", folder, limit=16 * safe.MB, **opts)
    where = f"edit.json of edit '{folder.name}'"
    if not isinstance(doc, dict):
        raise RewriteError(f"{where} is a JSON {type(doc).__name__}, not an object; {EDIT_FIX}")
    figures = doc.get("figures")
    if not isinstance(figures, dict):
        raise RewriteError(f"{where} has no table of figures; {EDIT_FIX}")
    for key in ("clean_acc_before", "clean_acc_after"):
        v = figures.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise RewriteError(f"{where}: figures.{key} is {v!r}, not a number; {EDIT_FIX}")
    if "heldout" in doc and not (isinstance(doc["heldout"], list)
                                 and all(isinstance(r, dict) for r in doc["heldout"])):
        raise RewriteError(f"{where}: 'heldout' must be a list of rows; {EDIT_FIX}")
    bad = first_non_finite(figures)
    if bad:
        raise RewriteError(f"{where}: figures.{bad} is not a finite number; {EDIT_FIX}")
    want = doc.get("weights_sha256")
    if want is not None:
        w = folder / "weights.safetensors"
        try:
            safe.check_file(w, folder)
        except (FileNotFoundError, ValueError) as e:
            raise RewriteError(f"weights.safetensors of edit '{folder.name}' cannot be read: "
                               f"{e if str(e) else 'it is missing'}; {EDIT_FIX}") from None
        if weights_digest(w) != want:
            raise RewriteError(f"weights.safetensors of edit '{folder.name}' fails the checksum "
                               f"edit.json records (it was changed or swapped); {EDIT_FIX}")
    return doc


def read_trace(path: str | os.PathLike) -> dict:
    """A `trace --out` file, checked: an object with p_clean, p_corrupt and layers."""
    from dissect.runs import safe
    path = Path(path)
    doc = safe.read_json(path, path.parent, limit=64 * safe.MB, error=TraceError,
                         owner="the trace", fix=TRACE_FIX)
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list) or not all(
            isinstance(doc.get(k), (int, float)) for k in ("p_clean", "p_corrupt", "images")):
        raise TraceError(f"{path.name} is not a trace result (p_clean, p_corrupt, images, "
                         f"layers); {TRACE_FIX}")
    return doc


def check_trace_out(path: str | os.PathLike) -> Path:
    """`trace --out FILE`: refuse a folder, or an existing file that no trace wrote."""
    path = Path(path)
    if os.path.lexists(path):
        if path.is_dir() or path.is_symlink() or not path.is_file():
            from dissect.runs.marker import describe
            what = describe(path) if path.is_dir() else "something that is not a file"
            raise TraceError(f"--out {path} holds {what}; --out names the JSON FILE to write "
                             "(e.g. --out traces/sun.json)")
        try:
            doc = read_trace(path)
        except TraceError:
            doc = None
        if not doc:
            raise TraceError(f"--out {path} is a file that `trace` did not write; it is left "
                             "as it is: choose another --out FILE")
    return path


__all__ = ["read_edit", "read_trace", "check_trace_out", "weights_digest"]
