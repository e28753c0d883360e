"""PNG files of visualisations, written atomically (temp + rename).

    write_png(images[0], "out/unit_5.png")      # float 3×H×W in [0, 1]
    png_bytes(images[0])                        # the same as bytes (the studio shows these)
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float 3×H×W in [0, 1] -> uint8 H×W×3."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5
            ).astype(np.uint8)


def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    from dissect.runs.atomic import write_bytes
    return write_bytes(path, png_bytes(image))


def read_png(path: str | os.PathLike) -> torch.Tensor:
    """float 3×H×W in [0, 1] of a PNG written by write_png."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()
