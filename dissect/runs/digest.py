"""Checksums that saved artefacts carry: a hash of their tensors and derived numbers.

    meta["sha256"] = digest(tensors={"direction": vec}, numbers={"norm": 3.2, "sigma": 0.7})
    verify(meta["sha256"], tensors=..., numbers=..., what="direction.json of 'dirs/sun'",
           fix="make it again with python -m dissect direction")   # ValueError subclass
    file_sha256(path)                  # hex sha256 of a file's bytes (streamed)

The hash covers each array's name, dtype, shape and bytes and each number's exact repr, so a
negated sigma, zeroed bits or a swapped tensor no longer matches; a mismatch is one line.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Mapping

import numpy as np

from dissect.errors import RunError


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):          # torch.Tensor, without importing torch here
        x = x.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(np.asarray(x))


def digest(tensors: Mapping[str, Any] | None = None,
           numbers: Mapping[str, Any] | None = None) -> str:
    """Hex sha256 over the arrays (name, dtype, shape, bytes) and the numbers (sorted JSON)."""
    h = hashlib.sha256(b"dissect-digest-1\0")
    for name in sorted(tensors or {}):
        a = _array(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{list(a.shape)}\0".encode())
        h.update(a.tobytes())
    h.update(json.dumps(dict(numbers or {}), sort_keys=True, default=repr).encode())
    return h.hexdigest()


def verify(expected: Any, *, tensors: Mapping[str, Any] | None = None,
           numbers: Mapping[str, Any] | None = None, what: str, fix: str,
           error: type[Exception] = RunError) -> None:
    """`error` naming `what` when `expected` is missing or differs from the digest."""
    if not isinstance(expected, str) or not expected:
        raise error(f"{what} has no checksum (written by an older version, or edited); {fix}")
    if digest(tensors, numbers) != expected:
        raise error(f"{what} fails its checksum (its numbers or tensors were changed after it "
                    f"was written); {fix}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def first_non_finite(obj: Any, path: str = "") -> str | None:
    """The JSON path of the first NaN/inf number in `obj` (dicts, lists, floats), or None."""
    if isinstance(obj, float) or isinstance(obj, np.floating):
        return None if math.isfinite(float(obj)) else (path or "the value")
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad = first_non_finite(v, f"{path}.{k}" if path else str(k))
            if bad:
                return bad
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad = first_non_finite(v, f"{path}[{i}]")
            if bad:
                return bad
    return None


def dumps_finite(obj: Any, what: str = "the result", **kwargs) -> str:
    """json.dumps(obj) when every number is finite; else RunError naming the first that is not
    (the CLI never prints NaN or Infinity, which are not JSON)."""
    bad = first_non_finite(obj)
    if bad:
        raise RunError(f"{what} is not a finite number at '{bad}' (NaN or infinity); nothing "
                       "printed. Check the inputs it came from (a damaged direction, run or "
                       "edit file)")
    return json.dumps(obj, allow_nan=False, **kwargs)


__all__ = ["digest", "verify", "file_sha256", "first_non_finite", "dumps_finite"]
