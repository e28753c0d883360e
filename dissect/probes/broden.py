"""The Broden reader: a Broden-format folder as a ProbeSet.

    probe = BrodenProbe("/data/broden1_224", categories=["object", "part"], split="val", limit=500)
    item = probe[0]            # ProbeItem: image 3×224×224 in [0,1], pixel["object"] P×112×112
    probe.concepts             # concept, name, category (primary), coverage

Folder layout (as NetDissect's broden1_224): `index.csv` (image, split, ih, iw, sh, sw, and one
column per category), `category.csv` (name, ...), `label.csv` (number, name, ...), and
`c_<cat>.csv` (code, number, name, frequency, coverage); images and mask PNGs under `images/`.
A category cell holds `;`-separated entries: PNG mask planes (label = R + 256·G) or numbers
(image-level labels, e.g. scene and texture; a number in a cell that also has PNGs fills a
whole plane). Each label's primary category is the one whose `c_<cat>.csv` gives it the largest
coverage (ties go to the later category, as NetDissect does). Images with no data in the chosen
categories are left out, as NetDissect-Lite does; then `split` filters and `limit` truncates.
Decoding happens in `__getitem__` (DataLoader workers); set `decode_images = False` to read
only the labels, or `decode_labels = False` to read only the images.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from dissect.probes.images import to_rgb
from dissect.errors import ProbeError
from dissect.probes.types import ProbeItem, ProbeSet

_INT = re.compile(r"^\d+$")


def _read_csv(path: Path, required: Sequence[str], fix: str) -> pd.DataFrame:
    if not path.exists():
        raise ProbeError(f"{path} is missing; {fix}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 - pandas raises many kinds
        raise ProbeError(f"{path} cannot be read as CSV ({e}); {fix}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ProbeError(f"{path} has no column {', '.join(repr(m) for m in missing)} "
                         f"(it has: {', '.join(df.columns)}); {fix}")
    return df


def _label_names(path: Path, labels: pd.DataFrame) -> dict[int, str]:
    """number -> name of label.csv; ProbeError naming the line of a bad or repeated number."""
    names: dict[int, str] = {}
    first: dict[int, int] = {}
    for i, (num, name) in enumerate(zip(labels["number"], labels["name"])):
        line = i + 2                                   # 1-based, after the header
        try:
            n = int(str(num).strip())
        except ValueError:
            raise ProbeError(f"{path} line {line}: number {num!r} is not a whole number; "
                             "fix that line") from None
        if n in names:
            raise ProbeError(f"{path} line {line}: label number {n} repeats line {first[n]} "
                             f"('{names[n]}' and '{name}'); each label needs its own number")
        names[n], first[n] = name, line
    return names


def _split_cell(cell: str) -> list[str]:
    return [t for t in cell.split(";") if t and t != "0"]


class BrodenProbe(ProbeSet):
    """A Broden-format folder; see the module docstring for layout and options."""

    def __init__(self, directory: str | os.PathLike, categories: Sequence[str] | str | None = None,
                 split: str | None = None, limit: int | None = None, **_ignored):
        self.directory = Path(directory).expanduser().resolve()
        if not self.directory.is_dir():
            raise ProbeError(f"Broden folder {self.directory} does not exist; download it with "
                             f"`python -m dissect data broden --out {self.directory.parent}` "
                             "(NetDissect's broden1_224.zip, ~1 GB), or pass --probe broden:DIR "
                             "with the folder that holds index.csv")
        d = self.directory
        fix_fmt = "a Broden folder needs index.csv, category.csv, label.csv and c_<cat>.csv"
        cat_df = _read_csv(d / "category.csv", ["name"], fix_fmt)
        all_cats = [c for c in cat_df["name"].tolist() if c]
        if isinstance(categories, str):
            categories = [c.strip() for c in categories.split(",") if c.strip()]
        if categories:
            unknown = [c for c in categories if c not in all_cats]
            if unknown:
                raise ProbeError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                                 f"{', '.join(unknown)} in {d / 'category.csv'}; choose from: "
                                 f"{', '.join(all_cats)}")
            cats = [c for c in all_cats if c in categories]   # keep category.csv order
        else:
            cats = all_cats
        index = _read_csv(d / "index.csv", ["image"] + cats,
                          "add the column (one per category in category.csv; empty cells are "
                          "fine) or pick categories with --categories")
        labels = _read_csv(d / "label.csv", ["number", "name"], fix_fmt)
        names = _label_names(d / "label.csv", labels)

        # primary category per label: largest c_<cat>.csv coverage, ties to the later category
        best: dict[int, tuple[float, int]] = {}
        for ci, cat in enumerate(cats):
            c = _read_csv(d / f"c_{cat}.csv", ["number", "coverage"],
                          f"each category in category.csv needs c_{cat}.csv "
                          "(code,number,name,frequency,coverage)")
            for num, cov in zip(c["number"].astype(int), pd.to_numeric(c["coverage"])):
                if num <= 0:
                    continue
                key = (float(cov), ci)
                if num not in best or key > best[num]:
                    best[num] = key
        # NetDissect compares (coverage or 0, category index) over every category
        for num, (cov, ci) in list(best.items()):
            if cov <= 0:
                best[num] = (0.0, len(cats) - 1)
        ids = sorted(best)
        self.concepts = pd.DataFrame({
            "concept": np.array(ids, dtype=np.int64),
            "name": [names.get(i, f"label {i}") for i in ids],
            "category": [cats[best[i][1]] for i in ids],
            "coverage": [best[i][0] for i in ids],
        })

        # keep rows with some data in the chosen categories, then split, then limit
        has = np.zeros(len(index), bool)
        for cat in cats:
            has |= index[cat].map(lambda v: bool(_split_cell(v))).to_numpy()
        index = index[has]
        if split:
            if "split" not in index.columns:
                raise ProbeError(f"{d / 'index.csv'} has no 'split' column; drop --split")
            splits = sorted(set(index["split"]))
            index = index[index["split"] == split]
            if index.empty:
                raise ProbeError(f"no images with split '{split}' in {d / 'index.csv'}; "
                                 f"splits there: {', '.join(splits)}")
        if limit is not None and int(limit) > 0:
            index = index.iloc[: int(limit)]
        if index.empty:
            raise ProbeError(f"{d / 'index.csv'} lists no images with data in categories "
                             f"{', '.join(cats)}; check the folder or --categories")
        self.rows = index.reset_index(drop=True)
        self.categories = cats
        is_scalar = {c: all(all(_INT.match(t) for t in _split_cell(v)) for v in self.rows[c])
                     for c in cats}
        self.scalar_categories = [c for c in cats if is_scalar[c]]
        self.pixel_categories = [c for c in cats if not is_scalar[c]]
        self.mask_size = self._size("sh", "sw", self._first_mask_size)
        self.image_size = self._size("ih", "iw", self._first_image_size)
        self.images = pd.DataFrame({
            "index": np.arange(len(self.rows)),
            "path": [str(d / "images" / p) for p in self.rows["image"]],
            "split": self.rows["split"] if "split" in self.rows else "",
            "width": self.image_size[1],
            "height": self.image_size[0],
        })
        self.description = f"Broden {d.name}: {len(self.rows)} images, {', '.join(cats)}"
        self.decode_images = True
        self.decode_labels = True

    # -- sizes
    def _size(self, hkey: str, wkey: str, fallback) -> tuple[int, int]:
        if hkey in self.rows and wkey in self.rows:
            try:
                hs = pd.to_numeric(self.rows[hkey]).astype(int)
                ws = pd.to_numeric(self.rows[wkey]).astype(int)
                return int(hs.mode()[0]), int(ws.mode()[0])
            except ValueError:
                raise ProbeError(f"{self.directory / 'index.csv'}: columns {hkey}/{wkey} must "
                                 "be whole numbers (pixel sizes)") from None
        return fallback()

    def _first_image_size(self) -> tuple[int, int]:
        img = self._load_image(0)
        return int(img.shape[1]), int(img.shape[2])

    def _first_mask_size(self) -> tuple[int, int]:
        for i, row in self.rows.iterrows():
            for cat in self.pixel_categories:
                for t in _split_cell(row[cat]):
                    if not _INT.match(t):
                        return self._load_plane(t, i, cat, None).shape
        return self._first_image_size()

    # -- decoding
    def _load_image(self, i: int) -> torch.Tensor:
        path = self.directory / "images" / self.rows["image"].iat[i]
        if not path.exists():
            raise ProbeError(f"image {path} (index.csv row {i + 2}) is missing; restore it or "
                             "remove that row from index.csv")
        try:
            with Image.open(path) as im:
                im = to_rgb(im)                  # 16-bit / float scaled, not clipped
                size = getattr(self, "image_size", None)
                if size and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ProbeError(f"image {path} (index.csv row {i + 2}) cannot be decoded ({e}); "
                             "replace the file or remove that row from index.csv") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)

    def _load_plane(self, name: str, i: int, cat: str, size) -> np.ndarray:
        path = self.directory / "images" / name
        if not path.exists():
            raise ProbeError(f"mask {path} (index.csv row {i + 2}, column '{cat}') is missing; "
                             "restore it or remove it from that cell")
        try:
            with Image.open(path) as im:
                if size and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.NEAREST)
                rgb = np.asarray(im.convert("RGB"), dtype=np.int32)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ProbeError(f"mask {path} (index.csv row {i + 2}, column '{cat}') cannot be "
                             f"decoded ({e}); replace the file") from None
        return rgb[..., 0] + 256 * rgb[..., 1]

    def __getitem__(self, i: int) -> ProbeItem:
        i = int(i)
        row = self.rows.iloc[i]
        image = self._load_image(i) if self.decode_images else torch.empty(0)
        pixel: dict[str, np.ndarray] = {}
        scalar: dict[str, np.ndarray] = {}
        h, w = self.mask_size
        for cat in self.categories if self.decode_labels else ():
            tokens = _split_cell(row[cat])
            if not tokens:
                continue
            if all(_INT.match(t) for t in tokens):
                scalar[cat] = np.array([int(t) for t in tokens], np.int32)
                continue
            planes = np.empty((len(tokens), h, w), np.int32)
            for p, t in enumerate(tokens):
                planes[p] = int(t) if _INT.match(t) else self._load_plane(t, i, cat, (h, w))
            pixel[cat] = planes
        return ProbeItem(index=i, image=image, pixel=pixel, scalar=scalar)
