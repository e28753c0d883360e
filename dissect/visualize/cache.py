"""A run's visualisations, drawn once and kept in `<run>/cache/vis/<layer>/`.

    row = cached(run_path, "conv6", 3)          # the trust row (dict) with "png", or None
    row = draw_cached(lm, open_run(p), "conv6", 3, progress=job.step)   # draw, keep, return
    cached_units(run_path, "conv6")             # {3, 50}: units drawn so far
    blob = zip_visualisations(run_path)         # every PNG + JSON, for the export

A feature layer (`layer4@sae512`) draws its decoder rows at the module `layer4`. The JSON is
written after the PNG, so a row found here always has its picture.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from dissect.visualize.config import VisConfig
from dissect.visualize.optimize import Progress

STUDIO = VisConfig(steps=256, size=128)      # what the studio draws (the CLI's defaults)


def cache_dir(run_path: str | os.PathLike, layer: str) -> Path:
    return Path(run_path) / "cache" / "vis" / layer


def run_stamp(run_path: str | os.PathLike) -> str:
    """created + updated of run.json: a redone run makes every kept picture stale."""
    try:
        info = json.loads((Path(run_path) / "run.json").read_text())
    except (OSError, ValueError):
        return ""
    return f"{info.get('created', '')}|{info.get('updated', '')}" if isinstance(info, dict) else ""


def cached(run_path: str | os.PathLike, layer: str, unit: int) -> dict | None:
    """The kept row of `unit` (its PNG path under "png"), or None when not drawn yet or drawn
    for an earlier version of the run."""
    d = cache_dir(run_path, layer)
    meta, png = d / f"unit_{int(unit)}.json", d / f"unit_{int(unit)}.png"
    if not (meta.is_file() and png.is_file()):
        return None
    try:
        row = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or row.get("run_stamp") != run_stamp(run_path):
        return None
    row["png"] = str(png)
    return row


def cached_units(run_path: str | os.PathLike, layer: str) -> set[int]:
    d = cache_dir(run_path, layer)
    if not d.is_dir():
        return set()
    out = set()
    for p in d.glob("unit_*.json"):
        stem = p.stem[len("unit_"):]
        if stem.isdigit() and cached(run_path, layer, int(stem)) is not None:
            out.add(int(stem))
    return out


def draw_cached(lm, run, layer: str, unit: int, cfg: VisConfig = STUDIO,
                progress: Progress | None = None) -> dict:
    """Draw `unit` of the run's `layer` (a feature layer: its decoder row), keep and return it."""
    from dissect.runs.atomic import write_json
    from dissect.visualize import sources as src
    from dissect.visualize.draw import draw
    module = layer.split("@")[0]
    channels = src.check_request(lm, module, cfg)
    if "@" in layer:
        targets = src.basis_targets(src.read_basis(run, layer), layer, module, channels, [unit],
                                    cfg.cosine)
        kind = "feature"
    else:
        targets = src.unit_targets([int(unit)], channels, module)
        kind = "unit"
    d = cache_dir(run.path, layer)
    tmp = d / ".drawing"
    row = draw(lm, module, targets, cfg, tmp, run=run, run_layer=layer, kind=kind,
               progress=progress)[0]
    png = d / f"unit_{int(unit)}.png"
    os.replace(row["path"], png)
    try:
        tmp.rmdir()
    except OSError:
        pass                     # another unit is being drawn beside it
    row.update(path=str(png), layer=layer, steps=cfg.steps, size=cfg.size, method=cfg.method,
               run_stamp=run_stamp(run.path))
    write_json(d / f"unit_{int(unit)}.json", row)
    row["png"] = str(png)
    return row


def zip_visualisations(run_path: str | os.PathLike) -> bytes | None:
    """A zip of every kept visualisation (vis/<layer>/unit_N.png + .json), or None if none."""
    root = Path(run_path) / "cache" / "vis"
    files = sorted(p for p in root.rglob("unit_*") if p.suffix in (".png", ".json")) \
        if root.is_dir() else []
    if not files:
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            z.write(p, Path("vis") / p.relative_to(root))
    return buf.getvalue()
