"""A generator of small Broden-format folders with known, planted concepts (tests, benchmarks).

    info = make_synthetic_broden("/tmp/sb", n=200, image_size=64, mask_size=32, seed=0)
    probe = BrodenProbe("/tmp/sb")          # a real Broden reader reads it like broden1_224

Each image is a background (its scene colour) with up to three axis-aligned boxes of solid
object colours. Categories:
- `color`  (pixel): every pixel's colour name;
- `object` (pixel): box labels; overlapping boxes go to a second plane (`a.png;b.png`);
- `part`   (pixel): the top half of each "car" box is a "window" (a label also present, with
  less coverage, in `object`: its primary category is `part`);
- `scene`  (image-level): the scene id, sometimes two ids (`12;13`).
Object label numbers start above 255 so mask PNGs use the G channel (label = R + 256·G).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

COLORS = {  # name -> RGB
    "red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
    "yellow": (230, 220, 30), "white": (240, 240, 240), "black": (15, 15, 15),
    "gray": (128, 128, 128), "purple": (140, 30, 170),
}
SCENES = {"beach": "yellow", "forest": "green", "sky": "blue", "night": "black"}
OBJECTS = {"car": "red", "house": "white", "tree": "purple", "window": "gray"}
SHAPES = ("circle", "square")   # optional objects (shapes=True) in a random colour
SHAPE_COLORS = ("red", "green", "blue", "yellow")
OBJECT_BASE = 300   # object label numbers: 300, 301, ... (uses the G channel)


def _label_table() -> pd.DataFrame:
    rows = []
    for i, name in enumerate(COLORS):
        rows.append((1 + i, name, "color"))
    for i, name in enumerate(SCENES):
        rows.append((20 + i, name, "scene"))
    for i, name in enumerate(list(OBJECTS) + list(SHAPES)):
        rows.append((OBJECT_BASE + i, name, "object"))
    return pd.DataFrame(rows, columns=["number", "name", "cat"])


def _save_mask(path: Path, labels: np.ndarray) -> None:
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    Image.fromarray(rgb).save(path)


def make_synthetic_broden(out: str | os.PathLike, n: int = 100, image_size: int = 64,
                          mask_size: int = 32, seed: int = 0, image_format: str = "jpg",
                          val_fraction: float = 0.2, shapes: bool = False) -> dict:
    """Write a Broden-format folder; returns {"dir", "labels": {name: number}, "n"}.

    shapes=True also draws one or two circles or squares per image, each in a random colour
    (red, green, blue or yellow), over the boxes: formulas such as (circle OR square) AND NOT
    red then describe exact regions."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    table = _label_table()
    num = dict(zip(table.name, table.number))
    color_ids = {name: num[name] for name in COLORS}
    s = mask_size
    rows = []
    cover: dict[str, dict[int, float]] = {c: {} for c in ("color", "object", "part", "scene")}
    freq: dict[str, dict[int, int]] = {c: {} for c in cover}

    def tally(cat: str, plane: np.ndarray | None, label: int | None = None) -> None:
        if plane is not None:
            ids, counts = np.unique(plane[plane > 0], return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist()):
                cover[cat][i] = cover[cat].get(i, 0.0) + c / plane.size
                freq[cat][i] = freq[cat].get(i, 0) + 1
        else:
            cover[cat][label] = cover[cat].get(label, 0.0) + 1.0
            freq[cat][label] = freq[cat].get(label, 0) + 1

    for i in range(n):
        scene = list(SCENES)[i % len(SCENES)]
        colour = np.full((s, s), color_ids[SCENES[scene]], np.int32)
        planes = [np.zeros((s, s), np.int32)]
        part = np.zeros((s, s), np.int32)
        for _ in range(int(rng.integers(1, 4))):
            obj = list(OBJECTS)[int(rng.integers(0, 3))]   # car, house, tree
            h, w = (int(v) for v in rng.integers(s // 5, s // 2, size=2))
            y, x = int(rng.integers(0, s - h)), int(rng.integers(0, s - w))
            plane = next((p for p in planes if not p[y:y + h, x:x + w].any()), None)
            if plane is None:
                plane = np.zeros((s, s), np.int32)
                planes.append(plane)
            plane[y:y + h, x:x + w] = num[obj]
            colour[y:y + h, x:x + w] = color_ids[OBJECTS[obj]]
            if obj == "car":
                part[y:y + h // 2, x:x + w] = num["window"]
                colour[y:y + h // 2, x:x + w] = color_ids["gray"]
                if i % 7 == 0:   # a few windows are also annotated as objects
                    planes[0][y:y + max(1, h // 8), x:x + w] = num["window"]
        if shapes:
            yy, xx = np.mgrid[0:s, 0:s]
            for _ in range(int(rng.integers(1, 3))):
                shape = SHAPES[int(rng.integers(0, 2))]
                r = int(rng.integers(s // 8, s // 4))
                cy, cx = (int(v) for v in rng.integers(r, s - r, size=2))
                if shape == "circle":
                    region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                else:
                    region = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
                plane = next((p for p in planes if not p[region].any()), None)
                if plane is None:
                    plane = np.zeros((s, s), np.int32)
                    planes.append(plane)
                plane[region] = num[shape]
                colour[region] = color_ids[SHAPE_COLORS[int(rng.integers(0, 4))]]
                part[region] = 0
        # image pixels: nearest-upsampled colour map plus a little noise
        rgb = np.array([COLORS[n_] for n_ in COLORS], np.float32)
        ids = np.array(list(color_ids.values()))
        lut = np.zeros(ids.max() + 1, np.int32)
        lut[ids] = np.arange(len(ids))
        small = rgb[lut[colour]]
        big = np.asarray(Image.fromarray(small.astype(np.uint8)).resize(
            (image_size, image_size), Image.NEAREST), np.float32)
        big = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
        stem = f"img{i:05d}"
        img_name = f"{stem}.{image_format}"
        Image.fromarray(big).save(out / "images" / img_name, quality=95) \
            if image_format == "jpg" else Image.fromarray(big).save(out / "images" / img_name)
        _save_mask(out / "images" / f"{stem}_color.png", colour)
        tally("color", colour)
        obj_names = []
        for j, plane in enumerate(planes):
            name = f"{stem}_object{j}.png"
            _save_mask(out / "images" / name, plane)
            tally("object", plane)
            obj_names.append(name)
        part_cell = ""
        if part.any():
            part_cell = f"{stem}_part.png"
            _save_mask(out / "images" / part_cell, part)
            tally("part", part)
        scenes = [num[scene]]
        if i % 5 == 0:
            scenes.append(num[list(SCENES)[(i + 1) % len(SCENES)]])
        for sc in scenes:
            tally("scene", None, sc)
        split = "val" if rng.random() < val_fraction else "train"
        rows.append({"image": img_name, "split": split, "ih": image_size, "iw": image_size,
                     "sh": s, "sw": s, "color": f"{stem}_color.png", "object": ";".join(obj_names),
                     "part": part_cell, "scene": ";".join(str(v) for v in scenes)})
    pd.DataFrame(rows).to_csv(out / "index.csv", index=False)

    cats = ["color", "object", "part", "scene"]
    cat_rows, label_cats = [], {}
    for cat in cats:
        ids = sorted(cover[cat])
        pd.DataFrame({
            "code": np.arange(1, len(ids) + 1), "number": ids,
            "name": [table.set_index("number").name[i] for i in ids],
            "frequency": [freq[cat][i] for i in ids],
            "coverage": [round(cover[cat][i], 4) for i in ids],
        }).to_csv(out / f"c_{cat}.csv", index=False)
        cat_rows.append({"name": cat, "first": min(ids, default=0), "last": max(ids, default=0),
                         "count": len(ids), "frequency": sum(freq[cat].values())})
        for i in ids:
            label_cats.setdefault(i, []).append(f"{cat}({freq[cat][i]})")
    pd.DataFrame(cat_rows).to_csv(out / "category.csv", index=False)
    labels = table[table.number.isin(label_cats)].copy()
    labels["category"] = [";".join(label_cats[i]) for i in labels.number]
    labels["frequency"] = [sum(freq[c].get(i, 0) for c in cats) for i in labels.number]
    labels["coverage"] = [round(sum(cover[c].get(i, 0) for c in cats), 4) for i in labels.number]
    labels["syns"] = labels.name
    labels[["number", "name", "category", "frequency", "coverage", "syns"]].to_csv(
        out / "label.csv", index=False)
    return {"dir": str(out), "labels": num, "n": n}


if __name__ == "__main__":  # python -m dissect.probes.synthetic_broden OUT [N] [IMAGE] [MASK]
    import sys
    a = sys.argv[1:]
    print(make_synthetic_broden(a[0], *(int(v) for v in a[1:4])))
