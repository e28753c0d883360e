"""Decoding user images safely: a per-call pixel limit, and proper conversion to 8-bit RGB.

    img = open_limited("photo.png", max_pixels=40_000_000)   # ImageTooLarge before decoding
    rgb = to_rgb(img)                                        # 16-bit / float scaled, not clipped

PIL's process-wide guard (Image.MAX_IMAGE_PIXELS) is never changed: the size is read from the
header (Image.open decodes nothing) and compared with this call's own limit.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

MAX_PIXELS = 40_000_000        # e.g. 8000×5000; decoded as RGB that is 120 MB


class ImageTooLarge(ValueError):
    """The image's header announces more pixels than the caller allows."""


def open_limited(source, *, max_pixels: int = MAX_PIXELS, label: str | None = None) -> Image.Image:
    """Image.open(source) after checking width×height against `max_pixels` (header only).

    Raises ImageTooLarge (naming the size and the limit), or PIL's own errors for non-images.
    """
    label = label or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "upload")
    try:
        img = Image.open(source)
    except Image.DecompressionBombError as e:      # larger still than PIL's global guard
        raise ImageTooLarge(f"image '{label}' is far over the limit of {max_pixels:,} pixels "
                            f"({e}); shrink it first") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageTooLarge(f"image '{label}' is {w}x{h} pixels, over the limit of "
                            f"{max_pixels:,}; shrink it first")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, decoded now (a copy: the file may be closed after). 16-bit and 32-bit integer images are scaled by their bit depth and float
    images by their range ([0, 1] kept, else min..max), where PIL's convert would clip at 255."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            lo, hi = (0.0, 1.0) if a.size and a.min() >= 0 and a.max() <= 1 else \
                (float(a.min()) if a.size else 0.0, float(a.max()) if a.size else 1.0)
        else:
            hi = 65535.0 if mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
            if a.size and a.max() > 65535:
                hi = float(2 ** 32 - 1)
            lo = 0.0
        scaled = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
        g = Image.fromarray((scaled * 255 + 0.5).astype(np.uint8), "L")
        return g.convert("RGB")
    return img.convert("RGB")
