"""Export a run folder as CSV, JSON, Parquet, or NetDissect's own tally.csv layout.

    paths = export_run("runs/r18", "netdissect")          # runs/r18/export/tally-layer4.csv
    export_run("runs/r18", "parquet", out="r18.parquet")  # one table, a `layer` column

All formats are views of units.csv (0-indexed units); only the NetDissect layout is 1-indexed,
sorted by score, with `<cat>-label,-truth,-activation,-intersect,-iou` columns per category.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from dissect.errors import RunError
from dissect.runs.folder import Run, open_run
from dissect.runs.atomic import write_bytes

FORMATS = ("csv", "json", "parquet", "netdissect")


def units_table(run: Run, layers: list[str]) -> pd.DataFrame:
    """All units of `layers`, with a leading `layer` column."""
    frames = []
    for layer in layers:
        df = run.units(layer)
        df.insert(0, "layer", layer)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def netdissect_table(run: Run, layer: str) -> pd.DataFrame:
    """NetDissect tally.csv: unit (1-indexed), category, label, score, per-category columns."""
    units = run.units(layer)
    cats = [c[: -len("-label")] for c in units.columns if c.endswith("-label")]
    cols = {"unit": units["unit"] + 1, "category": units["category"], "label": units["label"],
            "score": units["iou"]}
    for cat in cats:
        for part in ("label", "truth", "activation", "intersect", "iou"):
            key = f"{cat}-{part}"
            cols[key] = units[key] if key in units else ""
    table = pd.DataFrame(cols)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def export_run(path: str | Path, fmt: str, layer: str | None = None,
               out: str | Path | None = None) -> list[Path]:
    """Write `fmt` for the run at `path`; returns the files written."""
    run = open_run(path)
    if run.status != "complete":
        raise RunError(f"run {run.path} is {run.status}, not complete; finish it with the same "
                       "`python -m dissect run ...` command first")
    from dissect.runs.damage import require_whole
    require_whole(run.path)            # a "complete" run with damaged files: name them, say how
    if fmt not in FORMATS:
        raise RunError(f"unknown --format '{fmt}': use {', '.join(FORMATS)}")
    layers = [layer] if layer else run.layers
    for l in layers:
        run.layer_dir(l)
    default_dir = run.path / "export"
    if fmt == "netdissect":
        if out is not None and len(layers) == 1 and Path(out).suffix == ".csv":
            targets = {layers[0]: Path(out)}
        else:
            d = Path(out) if out is not None else default_dir
            targets = {l: d / f"tally-{l}.csv" for l in layers}
        for l, target in targets.items():
            write_bytes(target, netdissect_table(run, l).to_csv(index=False).encode())
        return list(targets.values())
    table = units_table(run, layers)
    target = Path(out) if out is not None else default_dir / f"units.{fmt}"
    if fmt == "csv":
        data = table.to_csv(index=False).encode()
    elif fmt == "parquet":
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        doc = {"run": str(run.path), "config": run.config, "versions": run.info.get("versions"),
               "concepts": json.loads(run.concepts.to_json(orient="records")),
               "layers": {l: json.loads(table[table.layer == l].drop(columns="layer")
                                        .to_json(orient="records")) for l in layers}}
        data = json.dumps(doc, indent=1).encode()
    write_bytes(target, data)
    return [target]
