"""Colour namer: every pixel gets one of the 11 basic colour terms, as Broden's colour category.

    seg = ColorNamer()
    [out] = seg.segment(np.asarray(pil_image)[None], mask_size=(112, 112))
    out.pixel["color"]      # int32 1×112×112, ids 1..11 in TERMS order
    seg.name_pixels(rgb)    # any uint8 ...×3 array -> term index 0..10, same shape less the 3

The model: nearest prototype in CIELAB among the 568 colours of the xkcd colour survey (Munroe
2010, ~200k participants, CC0) whose name's head word is a basic term (`color_terms.csv`), plus an
achromatic axis of black / grey / white anchors (the survey names few near-neutral colours, so
without them dark greys come out blue or brown). The whole RGB cube is classified once into a
64×64×64 lookup table (bins of 4 levels per channel, classified at their centres), so naming an
image is one table lookup per pixel: no weights, no per-pixel Python.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segmenters.base import Segmentation, check_images

TERMS = ["black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white",
         "yellow"]
BITS = 6                       # lookup table resolution per channel (2**BITS levels)
PROTOTYPES = Path(__file__).with_name("color_terms.csv")
# Achromatic anchors (L*, a* = b* = 0), set by hand: with the survey's own greys they make neutral
# pixels black up to RGB 47 (L* ≈ 19), white from RGB 228 (L* ≈ 91), grey between; tinted pixels
# still go to the nearest survey colour.
ANCHORS = {"black": [0, 5, 10, 15], "grey": [30, 40, 50, 60, 70, 80], "white": [96, 100]}


def prototypes() -> tuple[np.ndarray, np.ndarray]:
    """(Lab float64 N×3, term index int N) of every prototype colour and anchor."""
    from skimage.color import rgb2lab
    rgb, term = [], []
    for line in PROTOTYPES.read_text().splitlines()[4:]:
        t, _, hexa = line.split(",")
        rgb.append([int(hexa[i:i + 2], 16) for i in (1, 3, 5)])
        term.append(TERMS.index(t))
    lab = rgb2lab(np.array(rgb, np.float64)[None] / 255.0)[0]
    for t, ls in ANCHORS.items():
        lab = np.vstack([lab, [[l, 0.0, 0.0] for l in ls]])
        term += [TERMS.index(t)] * len(ls)
    return lab, np.array(term)


@lru_cache(maxsize=1)
def lookup_table() -> np.ndarray:
    """uint8 [2**(3*BITS)] term index for each quantised RGB colour (built once, ~0.2 s)."""
    from scipy.spatial import cKDTree
    from skimage.color import rgb2lab
    levels = 2 ** BITS
    step = 256 // levels
    centres = np.arange(levels) * step + (step - 1) / 2.0
    r, g, b = np.meshgrid(centres, centres, centres, indexing="ij")
    cube = np.stack([r, g, b], -1).reshape(-1, 3) / 255.0
    lab = rgb2lab(cube[None])[0]
    proto, term = prototypes()
    _, nearest = cKDTree(proto).query(lab)
    return term[nearest].astype(np.uint8)


class ColorNamer:
    """The 11 basic colour terms, pixel by pixel (category "color"); needs no weights."""

    name = "color"
    version = "1"
    categories = ["color"]
    pixel_categories = ["color"]
    scalar_categories: list[str] = []
    input_size = None
    from_files = False
    description = "11 basic colour terms per pixel (xkcd-survey prototypes in CIELAB; no weights)"

    def concepts(self) -> list[tuple[str, str]]:
        """The 11 terms, category "color"; id = position + 1."""
        return [(t, "color") for t in TERMS]

    def name_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 ...×3 RGB -> uint8 term index (0..10) per pixel, by table lookup."""
        q = (rgb >> (8 - BITS)).astype(np.int32)
        idx = (q[..., 0] << (2 * BITS)) | (q[..., 1] << BITS) | q[..., 2]
        return lookup_table()[idx]

    def segment(self, images: np.ndarray, mask_size: tuple[int, int],
                paths: Sequence[str] | None = None) -> list[Segmentation]:
        """Name every pixel after an area-averaging resize to `mask_size`; ids 1..11."""
        images = check_images(images)
        h, w = mask_size
        out = []
        for img in images:
            if img.shape[:2] != (h, w):
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BOX))
            ids = self.name_pixels(img).astype(np.int32) + 1
            out.append(Segmentation(pixel={"color": ids[None]}))
        return out
