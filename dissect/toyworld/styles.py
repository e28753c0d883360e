"""Restyled ToyWorld: the same scenes, with one concept drawn in another texture.

    r = parse_restyle("sea:snow")              # Restyle(concept="sea", style="snow")
    s = render(seed=0, index=7, restyle=r)     # scene, objects and masks as without restyle;
                                               # the visible sea pixels are painted with snow
    STYLES                                     # snow, wood, gravel, flowers, grayscale

The restyle runs after the scene is drawn, from its own random stream seeded by
(seed, index, style), so the scene, the object masks and every other pixel are exactly those
of the plain render. The colour labels of repainted pixels become the nearest named colour;
their texture label is cleared (the styles are not among world.TEXTURES).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dissect.errors import ProbeError
from dissect.toyworld.world import COLORS, OBJECTS


class StyleError(ProbeError):
    """An unknown style or concept in --restyle; the message lists the choices."""


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise in [0, 1], h×w, with features about `cell` px wide."""
    gh, gw = h // cell + 2, w // cell + 2
    g = rng.random((gh, gw)).astype(np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    b = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return a * (1 - fy) + b * fy


def snow(rng, rgb):
    h, w = rgb.shape[:2]
    n = _noise(rng, h, w, 6) * 0.6 + _noise(rng, h, w, 2) * 0.4
    base = np.array([236, 240, 246], np.float32)
    shade = np.array([170, 185, 210], np.float32)
    out = base + (shade - base) * (n[..., None] > 0.62) * (n[..., None] - 0.5)
    flakes = rng.random((h, w)) < 0.03
    out[flakes] = (252, 252, 255)
    return out


def wood(rng, rgb):
    h, w = rgb.shape[:2]
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    warp = _noise(rng, h, w, 16) * 10
    grain = (np.sin((y + warp + 0.15 * x) * 2 * np.pi / 7) + 1) / 2
    light = np.array([190, 130, 75], np.float32)
    dark = np.array([110, 65, 30], np.float32)
    return light + (dark - light) * grain[..., None] ** 2


def gravel(rng, rgb):
    h, w = rgb.shape[:2]
    stones = _noise(rng, h, w, 3)
    tone = 90 + 100 * stones
    tint = np.stack([tone, tone * 0.95, tone * 0.88], -1)
    specks = rng.random((h, w)) < 0.08
    tint[specks] *= 0.55
    return tint


def flowers(rng, rgb):
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 3), np.float32)
    out[...] = (70, 150, 60)
    out += (_noise(rng, h, w, 4)[..., None] - 0.5) * 40
    palette = np.array([(230, 50, 60), (250, 220, 60), (240, 150, 200), (150, 70, 200),
                        (250, 250, 250)], np.float32)
    for _ in range(max(4, h * w // 90)):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = int(rng.integers(2, 4))
        out[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = palette[rng.integers(len(palette))]
    return out


def grayscale(rng, rgb):
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(lum[..., None], 3, -1)


STYLES: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    f.__name__: f for f in (snow, wood, gravel, flowers, grayscale)}

_COLOR_RGB = np.array(list(COLORS.values()), np.float32)
_COLOR_SQ = (_COLOR_RGB ** 2).sum(1)


@dataclass(frozen=True)
class Restyle:
    concept: str
    style: str

    def __str__(self) -> str:
        return f"{self.concept}:{self.style}"

    @property
    def slug(self) -> str:
        return f"{self.concept}-{self.style}"


def check_style(style: str) -> str:
    if style not in STYLES:
        raise StyleError(f"unknown style '{style}': choose one of {', '.join(STYLES)}")
    return style


def parse_restyle(text: "str | Restyle | None") -> Restyle | None:
    """"sea:snow" -> Restyle("sea", "snow"); None or "" -> None; bad names -> StyleError."""
    if text is None or isinstance(text, Restyle):
        return text
    text = str(text).strip()
    if not text:
        return None
    concept, sep, style = text.partition(":")
    if not sep or not concept or not style:
        raise StyleError(f"bad --restyle '{text}': write CONCEPT:STYLE, e.g. sea:snow "
                         f"(styles: {', '.join(STYLES)})")
    if concept not in OBJECTS:
        raise StyleError(f"unknown concept '{concept}' in --restyle {text}: choose an object of "
                         f"ToyWorld ({', '.join(OBJECTS)})")
    return Restyle(concept, check_style(style))


def apply_restyle(sample, restyle: Restyle, seed: int, index: int):
    """Repaint `restyle.concept`'s visible pixels of a rendered Sample in place; returns it."""
    mask = sample.obj == OBJECTS.index(restyle.concept) + 1
    if not mask.any():
        return sample
    rng = np.random.default_rng([seed, index, zlib.crc32(restyle.style.encode())])
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = sample.rgb[y0:y1, x0:x1]
    painted = np.clip(STYLES[restyle.style](rng, box), 0, 255).astype(np.uint8)
    m = mask[y0:y1, x0:x1]
    box[m] = painted[m]
    d = _COLOR_SQ[None] - 2 * painted[m].astype(np.float32) @ _COLOR_RGB.T   # + |p|², constant
    sample.color[y0:y1, x0:x1][m] = d.argmin(1).astype(np.uint8) + 1
    sample.tex[y0:y1, x0:x1][m] = 0
    return sample


__all__ = ["STYLES", "Restyle", "StyleError", "parse_restyle", "apply_restyle", "check_style"]
