"""A vectorised painting canvas that keeps pixel labels in step with the pixels.

    cv = Canvas(224, rng)
    box, m = cv.ellipse(cy=50, cx=60, ry=20, rx=30)      # clipped bounding box + bool mask
    cv.paint(box, m, "red", obj="sun", tex="striped")     # RGB, colour, object, part, texture
    cv.rgb, cv.color, cv.obj, cv.part, cv.tex             # uint8 arrays (local label indices)

Shapes are masks computed from coordinate grids restricted to their bounding box: no
per-pixel Python. Label indices are 1-based positions in world.COLORS/OBJECTS/PARTS/TEXTURES
(0 = unlabelled).
"""
from __future__ import annotations

import numpy as np

from dissect.toyworld.world import COLORS, JITTER, OBJECTS, PARTS, TEXTURES

COLOR_NAMES = list(COLORS)
COLOR_RGB = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.int16)
_CIDX = {c: i + 1 for i, c in enumerate(COLOR_NAMES)}
_OIDX = {o: i + 1 for i, o in enumerate(OBJECTS)}
_PIDX = {p: i + 1 for i, p in enumerate(PARTS)}
_TIDX = {t: i + 1 for i, t in enumerate(TEXTURES)}

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (clipped, half-open)

_NOISE: dict[int, np.ndarray] = {}


def _noise_tile(size: int) -> np.ndarray:
    """A fixed int16 noise tile (same for every seed: texture, not randomness)."""
    if size not in _NOISE:
        r = np.random.default_rng(12345)
        _NOISE[size] = (r.standard_normal((2 * size, 2 * size, 3)) * 22).astype(np.int16)
    return _NOISE[size]


class Canvas:
    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.rgb = np.zeros((size, size, 3), np.uint8)
        self.color = np.zeros((size, size), np.uint8)
        self.obj = np.zeros((size, size), np.uint8)
        self.part = np.zeros((size, size), np.uint8)
        self.tex = np.zeros((size, size), np.uint8)
        self.ar = np.arange(size, dtype=np.float32)
        self.noise = _noise_tile(size)
        self.banned: set[str] = set()   # colour names objects may not use (the background's)

    # ---- geometry -------------------------------------------------------------------------
    def box(self, y0: float, y1: float, x0: float, x1: float) -> Box | None:
        s = self.size
        b = (max(0, int(np.floor(y0))), min(s, int(np.ceil(y1)) + 1),
             max(0, int(np.floor(x0))), min(s, int(np.ceil(x1)) + 1))
        return b if b[0] < b[1] and b[2] < b[3] else None

    def grid(self, b: Box, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates relative to (cy, cx) over box b: Y (h×1) and X (1×w)."""
        return (self.ar[b[0]:b[1], None] - cy), (self.ar[None, b[2]:b[3]] - cx)

    def ellipse(self, cy, cx, ry, rx):
        b = self.box(cy - ry, cy + ry, cx - rx, cx + rx)
        if b is None:
            return None, None
        Y, X = self.grid(b, cy, cx)
        return b, (Y / ry) ** 2 + (X / rx) ** 2 <= 1.0

    def rect(self, y0, y1, x0, x1):
        b = self.box(y0, y1 - 1, x0, x1 - 1)
        if b is None:
            return None, None
        return b, np.ones((b[1] - b[0], b[3] - b[2]), bool)

    def polygon(self, pts):
        """Convex polygon from [(y, x), ...] in counter- or clockwise order."""
        p = np.asarray(pts, np.float32)
        b = self.box(p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max())
        if b is None:
            return None, None
        Y, X = self.grid(b, 0.0, 0.0)
        area = 0.0
        for i in range(len(p)):
            (y0, x0), (y1, x1) = p[i], p[(i + 1) % len(p)]
            area += x0 * y1 - x1 * y0
        sign = 1.0 if area >= 0 else -1.0
        m = None
        for i in range(len(p)):
            (y0, x0), (y1, x1) = p[i], p[(i + 1) % len(p)]
            side = sign * ((x1 - x0) * (Y - y0) - (y1 - y0) * (X - x0)) >= 0
            m = side if m is None else (m & side)
        return b, m

    def star(self, cy, cx, r, points=5, rot=0.0):
        b = self.box(cy - r, cy + r, cx - r, cx + r)
        if b is None:
            return None, None
        Y, X = self.grid(b, cy, cx)
        ang = np.arctan2(Y, X) + rot
        rad = np.sqrt(Y ** 2 + X ** 2)
        edge = r * (0.45 + 0.55 * np.abs(np.cos(ang * points / 2)) ** 3)
        return b, rad <= edge

    def segment(self, y0, x0, y1, x1, width):
        b = self.box(min(y0, y1) - width, max(y0, y1) + width,
                     min(x0, x1) - width, max(x0, x1) + width)
        if b is None:
            return None, None
        Y, X = self.grid(b, y0, x0)
        dy, dx = y1 - y0, x1 - x0
        L2 = max(dy * dy + dx * dx, 1e-6)
        t = np.clip((Y * dy + X * dx) / L2, 0, 1)
        return b, (Y - t * dy) ** 2 + (X - t * dx) ** 2 <= (width / 2) ** 2

    # ---- colour and paint -----------------------------------------------------------------
    def pick(self, names, exclude=()) -> str:
        ok = [n for n in names if n not in self.banned and n not in exclude]
        if not ok:
            ok = [n for n in names if n not in exclude] or list(names)
        return ok[int(self.rng.integers(len(ok)))]

    def jitter(self, name: str) -> np.ndarray:
        base = COLORS[name]
        d = self.rng.integers(-JITTER, JITTER + 1, 3).tolist()
        return np.array([min(255, max(0, base[k] + d[k])) for k in range(3)], np.int16)

    def pattern(self, b: Box, tex: str, scale: float) -> np.ndarray:
        """Where the second colour of pattern `tex` goes, over box b (bool, box-shaped)."""
        Y, X = self.grid(b, 0.0, 0.0)
        p = max(3.0, scale)
        if tex == "striped":
            k = int(self.rng.integers(4))
            v = [Y, X, (X + Y) * 0.7071, (X - Y) * 0.7071][k]
            return np.broadcast_to((v // p) % 2 == 0, (b[1] - b[0], b[3] - b[2]))
        if tex == "dotted":
            q = 2 * p
            return ((Y % q) - q / 2) ** 2 + ((X % q) - q / 2) ** 2 <= (0.35 * q) ** 2
        if tex == "checkered":
            return ((Y // p) + (X // p)) % 2 == 0
        if tex == "wavy":
            return ((Y + 0.6 * p * np.sin(X * (np.pi / (1.5 * p)))) // p) % 2 == 0
        raise ValueError(tex)

    def paint(self, b: Box | None, m: np.ndarray | None, color: str, obj: str | None = None,
              part: str | None = None, tex: str | None = None, color2: str | None = None,
              scale: float = 6.0) -> None:
        """Paint mask m (over box b) with `color`; a pattern paints `color2` where it says."""
        if b is None:
            return
        sl = (slice(b[0], b[1]), slice(b[2], b[3]))
        if m is None:
            self._fill(b, sl, color, obj, part, tex, color2, scale)
            return
        if m.shape != (b[1] - b[0], b[3] - b[2]):
            m = np.broadcast_to(m, (b[1] - b[0], b[3] - b[2]))
        rgb, lab = self.rgb[sl], self.color[sl]
        if tex == "noisy":
            noise = self.noise[b[0]:b[1], b[2]:b[3]]
            rgb[m] = np.clip(self.jitter(color) + noise[m], 0, 255).astype(np.uint8)
            lab[m] = _CIDX[color]
        elif tex is not None:
            pm = self.pattern(b, tex, scale)
            m1, m2 = m & ~pm, m & pm
            rgb[m1] = self.jitter(color)
            lab[m1] = _CIDX[color]
            rgb[m2] = self.jitter(color2)
            lab[m2] = _CIDX[color2]
        else:
            rgb[m] = self.jitter(color)
            lab[m] = _CIDX[color]
        self.obj[sl][m] = _OIDX[obj] if obj else 0
        self.part[sl][m] = _PIDX[part] if part else 0
        self.tex[sl][m] = _TIDX[tex] if tex else 0

    def _fill(self, b, sl, color, obj, part, tex, color2, scale) -> None:
        """paint() over the whole box (no mask): plain slice writes."""
        rgb, lab = self.rgb[sl], self.color[sl]
        if tex == "noisy":
            noise = self.noise[b[0]:b[1], b[2]:b[3]]
            rgb[...] = np.clip(self.jitter(color) + noise, 0, 255)
            lab[...] = _CIDX[color]
        else:
            pm = self.pattern(b, tex, scale) if tex is not None else None
            rgb[...] = self.jitter(color)
            lab[...] = _CIDX[color]
            if pm is not None:
                rgb[pm] = self.jitter(color2)
                lab[pm] = _CIDX[color2]
        self.obj[sl] = _OIDX[obj] if obj else 0
        self.part[sl] = _PIDX[part] if part else 0
        self.tex[sl] = _TIDX[tex] if tex else 0

    def paint_all(self, tex: str | None, color: str, color2: str, scale: float) -> None:
        """Fill the whole canvas (the background)."""
        s = self.size
        self.paint((0, s, 0, s), None, color, tex=tex, color2=color2, scale=scale)
