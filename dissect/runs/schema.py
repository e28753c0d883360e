"""The typed schema of run.json, checked on every read.

    info = read_info("runs/r18")                                 # run.json, read and checked
    info = check_info(json.loads(text), "runs/r18/run.json")   # RunError naming the key and fix
    RunInfo.from_dict(info).config.layers                        # ["layer3", "layer4"]

Readers keep using the plain dict (`info["config"]["model"]`); this module guarantees its
shape: a run.json of the wrong shape (`[1, 2, 3]`, `counts: null`, `layers: "conv6"`) is a
RunError, so a damaged folder is listed as damaged and never breaks a page. Keys beyond the
schema are kept (later issues add their own); known keys must have their type.
"""
from __future__ import annotations

import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Union

import os
from pathlib import Path

from dissect.errors import RunError

FORMAT_VERSION = 1
STATUSES = ("running", "complete", "failed", "cancelled")
_BAD_LAYER = re.compile(r"\.\.|[/\\\x00]|^\.|^$")


@dataclass
class ConfigInfo:
    """run.json["config"]: what the run was asked to do (dissection.DissectConfig's fields)."""
    layers: list[str]
    probe: str
    model: str = ""
    weights: str = "none"
    probe_options: dict = field(default_factory=dict)
    quantile: float = 0.005
    denominator: str = "nd"
    iou_threshold: float = 0.04
    topk: int = 20
    seed: int = 0
    classes: Union[str, None] = None


@dataclass
class CountsInfo:
    """run.json["counts"] (empty until the probe is open)."""
    images: int = 0
    concepts: int = 0
    skipped_images: int = 0
    units: dict = field(default_factory=dict)


@dataclass
class ProgressInfo:
    phase: str = "forward"
    done: int = 0
    total: int = 0


@dataclass
class RunInfo:
    """run.json of a run folder."""
    format_version: int
    status: str
    config: ConfigInfo
    counts: CountsInfo = field(default_factory=CountsInfo)
    progress: ProgressInfo = field(default_factory=ProgressInfo)
    versions: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    error: Union[str, None] = None
    created: Union[str, None] = None
    updated: Union[str, None] = None
    identity: Union[str, None] = None

    @classmethod
    def from_dict(cls, info: Any, where: str = "run.json") -> "RunInfo":
        """Build from parsed JSON; RunError naming the first key of the wrong shape."""
        return _build(cls, info, where, "")


def _build(cls, value: Any, where: str, prefix: str):
    if not isinstance(value, dict):
        what = f"key '{prefix[:-1]}'" if prefix else "the file"
        raise RunError(f"{where} is damaged: {what} must be a JSON object, not "
                       f"{_kind(value)}; run the dissection again with --overwrite")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        key = prefix + f.name
        if f.name not in value:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RunError(f"{where} is damaged: key '{key}' is missing; run the "
                               "dissection again with --overwrite")
            continue
        kwargs[f.name] = _check(hints[f.name], value[f.name], where, key)
    return cls(**kwargs)


def _check(tp, v: Any, where: str, key: str):
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        opts = typing.get_args(tp)
        if v is None and type(None) in opts:
            return None
        tp = next(t for t in opts if t is not type(None))
        origin = typing.get_origin(tp)
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _build(tp, v, where, key + ".")
    ok = {str: lambda x: isinstance(x, str),
          int: lambda x: isinstance(x, int) and not isinstance(x, bool),
          float: lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
          dict: lambda x: isinstance(x, dict)}
    if origin is list:
        (inner,) = typing.get_args(tp)
        good = isinstance(v, list) and all(ok[inner](x) for x in v)
        want = f"a list of {inner.__name__}s"
    else:
        good = ok[tp](v)
        want = {str: "a string", int: "an integer", float: "a number", dict: "an object"}[tp]
    if not good:
        raise RunError(f"{where} is damaged: key '{key}' must be {want}, not {_kind(v)}; run "
                       "the dissection again with --overwrite")
    return v


def _kind(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}" if v is not None else "null"


def check_info(info: Any, where: str) -> dict:
    """`info` when it fits the schema (plus status and layer-name rules), else RunError."""
    ri = RunInfo.from_dict(info, where)
    if ri.status not in STATUSES:
        raise RunError(f"{where} is damaged: status '{ri.status}' is not one of "
                       f"{', '.join(STATUSES)}; run the dissection again with --overwrite")
    if not ri.config.layers:
        raise RunError(f"{where} is damaged: config.layers is empty; run the dissection again "
                       "with --overwrite")
    for layer in ri.config.layers:
        check_layer_name(layer, where)
    return info


def check_layer_name(layer: str, where: str = "the layer") -> str:
    """A module name that is safe as a folder name (`features.11`, never `..` or `a/b`)."""
    if not isinstance(layer, str) or _BAD_LAYER.search(layer):
        raise RunError(f"{where}: layer name {layer!r} is not a module name (it contains a "
                       "path part such as '..' or '/'); use names `python -m dissect layers` "
                       "lists")
    return layer


def read_info(path: str | os.PathLike) -> dict:
    """run.json of a run folder, checked for format version; RunError with the fix otherwise."""
    from dissect.runs.safe import read_json
    path = Path(path)
    f = path / "run.json"
    if not os.path.lexists(f):
        raise RunError(f"{path} is not a run folder (no run.json); create one with "
                       f"`python -m dissect run ... --out {path}`")
    info = read_json(f, path, owner=f"run '{path.name}'",
                     fix="delete the folder and run the dissection again")
    version = info.get("format_version") if isinstance(info, dict) else None
    if isinstance(info, dict) and version != FORMAT_VERSION:
        raise RunError(f"{f} has format_version {version!r}, this version reads "
                       f"{FORMAT_VERSION}; rerun the dissection with this version")
    return check_info(info, str(f))
