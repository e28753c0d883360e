"""Write a ToyWorld world as a real Broden-format folder (as NetDissect's broden1_224).

    build_world("/tmp/tw", n=500, seed=0)        # atomically: built beside, then renamed
    BrodenProbe("/tmp/tw")                       # any Broden reader serves it

Layout: `index.csv` (image,split,ih,iw,sh,sw,color,object,part,material,scene,texture),
`category.csv` (name,first,last,count,frequency), `label.csv`
(number,name,category,frequency,coverage,syns), `c_<cat>.csv` (code,number,name,frequency,
coverage); under `images/toyworld/`: 224 px PNG images (lossless, so colour labels stay exact)
and 112 px mask PNGs, label = R + 256·G. color, object, part and texture are pixel-level (one
mask file each, left out when empty), scene is image-level (its number in the cell), material
is empty. Every 5th image is split "val", the rest "train".
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from dissect.errors import ProbeError
from dissect.toyworld.generate import render, render_pair
from dissect.toyworld.world import (COLORS, OBJECTS, PARTS, PIXEL_CATEGORIES, RANGES,
                                    SCENE_NAMES, TEXTURES, concept_table)

COLUMNS = ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "material",
           "scene", "texture"]
_LUT = {cat: np.array([0] + [RANGES[cat][0] + i for i in range(len(names))], np.int32)
        for cat, names in [("color", COLORS), ("object", OBJECTS), ("part", PARTS),
                           ("texture", TEXTURES)]}
_PLANE_ATTR = {"color": "color", "object": "obj", "part": "part", "texture": "tex"}


def _save_mask(path: Path, labels: np.ndarray) -> None:
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    Image.fromarray(rgb).save(path, compress_level=1)


def _sample_row(root: Path, name: str, s, split: str, size: int) -> dict:
    """Write one sample's image and masks; its index row + label tallies."""
    Image.fromarray(s.rgb).save(root / "images" / f"{name}.png", compress_level=1)
    row = {"image": f"{name}.png", "split": split,
           "ih": size, "iw": size, "sh": size // 2, "sw": size // 2, "material": "",
           "scene": str(RANGES["scene"][0] + s.scene) if s.scene >= 0 else ""}
    tally = {}
    for cat in PIXEL_CATEGORIES:
        local = getattr(s, _PLANE_ATTR[cat])[::2, ::2]     # nearest, half size
        labels = _LUT[cat][local]
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        if len(ids):
            _save_mask(root / "images" / f"{name}_{cat}.png", labels)
            row[cat] = f"{name}_{cat}.png"
            tally[cat] = dict(zip(ids.tolist(), (counts / labels.size).tolist()))
        else:
            row[cat] = ""
    if s.scene >= 0:
        tally["scene"] = {RANGES["scene"][0] + s.scene: 1.0}
    return {"row": row, "tally": tally}


def _write_chunk(args) -> list[dict]:
    """Render and write images start..start+count-1; returns index rows + label tallies.

    With a pair object (7th argument), scene i becomes rows 2i (with it) and 2i+1 (without),
    marked in the extra columns `pair` (i) and `twin` (with|without)."""
    root, seed, start, count, size, restyle = args[:6]
    pair = args[6] if len(args) > 6 else None
    root = Path(root)
    out = []
    for i in range(start, start + count):
        split = "val" if i % 5 == 4 else "train"
        if pair is None:
            out.append(_sample_row(root, f"toyworld/tw_{i:06d}",
                                   render(seed, i, size, restyle=restyle), split, size))
            continue
        for twin, s in zip(("with", "without"), render_pair(seed, i, pair, size)):
            r = _sample_row(root, f"toyworld/tw_{i:06d}_{twin}", s, split, size)
            r["row"].update(pair=i, twin=twin)
            out.append(r)
    return out


def _write_tables(root: Path, results: list[dict]) -> None:
    extra = [c for c in ("pair", "twin") if results and c in results[0]["row"]]
    index = pd.DataFrame([r["row"] for r in results], columns=COLUMNS + extra)
    index.to_csv(root / "index.csv", index=False)
    freq: dict[int, int] = {}
    cover: dict[int, float] = {}
    cat_images: dict[str, int] = {}
    for r in results:
        for cat, t in r["tally"].items():
            cat_images[cat] = cat_images.get(cat, 0) + 1
            for k, v in t.items():
                freq[k] = freq.get(k, 0) + 1
                cover[k] = cover.get(k, 0.0) + v
    table = concept_table()
    labels = pd.DataFrame({
        "number": [n for n, _, _ in table],
        "name": [name for _, name, _ in table],
        "category": [f"{cat}({freq.get(n, 0)})" for n, _, cat in table],
        "frequency": [freq.get(n, 0) for n, _, _ in table],
        "coverage": [round(cover.get(n, 0.0) / max(1, freq.get(n, 0)), 6) for n, _, _ in table],
        "syns": [name for _, name, _ in table],
    })
    labels.to_csv(root / "label.csv", index=False)
    cats = []
    for cat in ["color", "object", "part", "scene", "texture"]:
        first, names = RANGES[cat]
        cats.append((cat, first, first + len(names) - 1, len(names), cat_images.get(cat, 0)))
        rows = labels[labels.number.between(first, first + len(names) - 1)
                      & (labels.frequency > 0)]      # as Broden: only labels that occur
        pd.DataFrame({"code": rows.number - first + 1, "number": rows.number,
                      "name": rows.name, "frequency": rows.frequency,
                      "coverage": rows.coverage}).to_csv(root / f"c_{cat}.csv", index=False)
    pd.DataFrame(cats, columns=["name", "first", "last", "count", "frequency"]).to_csv(
        root / "category.csv", index=False)


def build_world(out: str | os.PathLike, n: int, seed: int = 0, size: int = 224,
                workers: int = 1, progress: Callable[[int, int], None] | None = None,
                chunk: int = 100, restyle: str | None = None, pair: str | None = None) -> Path:
    """Write world `seed` (images 0..n-1) as a Broden folder at `out` (must not exist yet).

    `restyle` ("sea:snow"): the same scenes with that concept drawn in another style.
    `pair="sun"`: each of the n scenes twice, with and without the sun (2n images).
    """
    out = Path(out)
    if out.exists():
        raise ProbeError(f"{out} already exists; remove it or choose another --out")
    if n < 1:
        raise ProbeError(f"a ToyWorld needs at least 1 image (got {n}); pass a positive N")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images" / "toyworld").mkdir(parents=True)
        restyle = str(restyle) if restyle else None
        jobs = [(str(tmp), seed, s, min(chunk, n - s), size, restyle, pair)
                for s in range(0, n, chunk)]
        results: list[dict] = []
        pool = None
        # fork copies only the calling thread: inside a threaded process (the studio's server)
        # a lock another thread holds would hang the workers for ever, so build in this thread
        if workers > 1 and len(jobs) > 1 and threading.active_count() == 1:
            import multiprocessing as mp
            pool = mp.get_context("fork").Pool(min(workers, len(jobs)))
            it = pool.imap(_write_chunk, jobs)
        else:
            it = map(_write_chunk, jobs)
        try:
            for res in it:
                results += res
                if progress:
                    progress(len(results) // (2 if pair else 1), n)
        except BaseException:
            if pool is not None:       # stop now: close() alone would finish every chunk first
                pool.terminate()
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        _write_tables(tmp, results)
        (tmp / "README.txt").write_text(
            (f"Pairs with and without '{pair}' (columns pair, twin). " if pair else "") +
            f"ToyWorld seed {seed}, {n} images at {size} px (masks {size // 2} px), "
            + (f"{restyle.replace(':', ' drawn as ')}, " if restyle else "") +
            f"scenes: {', '.join(SCENE_NAMES)}. Written by dissect.toyworld.\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
