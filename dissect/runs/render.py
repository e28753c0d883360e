"""Pictures of a run: unit masks, NetDissect overlays, concept segmentations, thumbnails.

    r = RunRenderer(open_run("runs/r18"))
    jpeg = r.unit_overlay("layer4", unit=17, rank=0)    # bytes, cached under <run>/cache/
    rgb = overlay(image, unit_mask(raw_map, threshold, image.shape[:2]))   # plain arrays

No Streamlit here: the app wraps these in st.cache_data. A unit's mask is its raw map upsampled
bilinear with half-pixel centres (align_corners=False, as the engine does) to the image size and
thresholded strictly above T_k; pixels outside it are dimmed to x0.2 as NetDissect shows them.
"""
from __future__ import annotations

import colorsys
import hashlib
import io
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

DIM = 0.2                      # NetDissect's dimming of pixels outside the unit's mask
MAX_SIDE = 320                 # images larger than this are shown downscaled
CATEGORY_COLORS = {            # one colour per category, used by every chart and badge
    "object": "#4C78A8", "part": "#F58518", "scene": "#54A24B", "material": "#B279A2",
    "texture": "#E45756", "color": "#EECA3B", "shape": "#72B7B2", "none": "#9D9D9D",
}
_EXTRA = ["#FF9DA6", "#9D755D", "#BAB0AC", "#79706E", "#D67195", "#8CD17D"]


class MissingImage(FileNotFoundError):
    """A probe image that is neither on disk nor rebuildable from the probe set."""


def category_color(category: str) -> str:
    """Hex colour of a category (stable for unknown names too)."""
    if category in CATEGORY_COLORS:
        return CATEGORY_COLORS[category]
    h = int(hashlib.md5(str(category).encode()).hexdigest(), 16)
    return _EXTRA[h % len(_EXTRA)]


NAMED_COLORS = {   # concepts named after a colour are drawn in that colour
    "black": (20, 20, 20), "blue": (40, 80, 220), "brown": (130, 80, 40), "grey": (128, 128, 128),
    "gray": (128, 128, 128), "green": (40, 170, 60), "orange": (245, 140, 20),
    "pink": (245, 150, 190), "purple": (140, 50, 170), "red": (220, 30, 30),
    "white": (245, 245, 245), "yellow": (240, 220, 30),
}


def concept_color(concept: int, name: str | None = None) -> tuple[int, int, int]:
    """A distinct, stable RGB colour for a concept id (golden-ratio hues); a colour name
    (`name` "red", "red-c") gets that colour."""
    if name:
        base = str(name).split("-")[0].strip().lower()
        if base in NAMED_COLORS:
            return NAMED_COLORS[base]
    hue = (int(concept) * 0.618033988749895) % 1.0
    sat = 0.55 + 0.35 * ((int(concept) * 7) % 3) / 2
    r, g, b = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


# ----------------------------------------------------------------------------- array maths
def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, align_corners=False resize of [..., h, w] maps to `size` (H, W); float32, with
    the engine's own arithmetic (dissect.engine.tally.upsample_cells), so `upsample(...) > T_k`
    is exactly the engine's active mask."""
    import torch
    from dissect.engine.tally import upsample_cells
    a = np.asarray(maps, dtype=np.float32)
    lead = a.shape[:-2]
    if tuple(a.shape[-2:]) == tuple(size):
        return a.copy()
    t = torch.from_numpy(np.ascontiguousarray(a.reshape(-1, *a.shape[-2:])))
    out = upsample_cells(t, tuple(int(s) for s in size))
    return out.numpy().reshape(*lead, *size)


def unit_mask(raw_map: np.ndarray, threshold: float, size: tuple[int, int]) -> np.ndarray:
    """Bool H×W: the unit's raw h×w map upsampled to `size` and thresholded `> threshold`."""
    return upsample(raw_map, size) > float(threshold)


def overlay(image: np.ndarray, mask: np.ndarray, dim: float = DIM,
            edge: tuple[int, int, int] | None = (255, 255, 255)) -> np.ndarray:
    """uint8 H×W×3 with pixels outside `mask` dimmed to ×`dim`; optional 1-px mask outline."""
    img = image.astype(np.float32)
    out = np.where(mask[..., None], img, img * dim)
    if edge is not None and mask.any():
        m = mask
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        border = m & ~inner
        out[border] = edge
    return np.clip(out, 0, 255).astype(np.uint8)


def label_planes_to_map(planes: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Int H×W concept id per pixel from P×h×w planes (first non-zero plane wins; 0 = none),
    nearest-resized to `size`."""
    p = np.asarray(planes)
    if p.ndim == 2:
        p = p[None]
    lab = np.zeros(p.shape[-2:], dtype=np.int64)
    for plane in p[::-1]:
        lab = np.where(plane != 0, plane, lab)
    if size is not None and tuple(lab.shape) != tuple(size):
        lab = resize_nearest(lab, size)
    return lab


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer H×W map (pixel centres), no interpolation."""
    h, w = labels.shape
    ys = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    xs = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return labels[ys[:, None], xs[None, :]]


def concept_mask(planes: np.ndarray, concept: int, size: tuple[int, int]) -> np.ndarray:
    """Bool H×W: pixels carrying `concept` in any of the P×h×w planes."""
    p = np.asarray(planes)
    if p.ndim == 2:
        p = p[None]
    m = (p == int(concept)).any(axis=0).astype(np.int64)
    return resize_nearest(m, size).astype(bool)


def colorize(labels: np.ndarray, image: np.ndarray | None = None,
             alpha: float = 0.6, names: dict[int, str] | None = None) -> np.ndarray:
    """uint8 H×W×3: each concept id in its colour, blended over `image`; 0 stays the image
    (darkened) or black."""
    ids = np.unique(labels)
    lut = np.zeros((int(ids.max()) + 1 if ids.size else 1, 3), dtype=np.float32)
    for c in ids:
        if c > 0:
            lut[c] = concept_color(int(c), (names or {}).get(int(c)))
    col = lut[labels]
    if image is None:
        return col.astype(np.uint8)
    img = image.astype(np.float32)
    out = np.where((labels > 0)[..., None], alpha * col + (1 - alpha) * img, img * 0.35)
    return np.clip(out, 0, 255).astype(np.uint8)


def segment_by_units(acts: np.ndarray, thresholds: np.ndarray, unit_concepts: np.ndarray,
                     size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label each pixel with the concept of the unit firing most above its threshold there.

    acts: K×h×w raw maps of the chosen units on one image; thresholds, unit_concepts: [K].
    Returns (concept id H×W, 0 where no unit fires; index of the winning unit H×W, -1 none).
    """
    k = len(thresholds)
    if k == 0:
        return np.zeros(size, np.int64), np.full(size, -1, np.int64)
    up = upsample(np.asarray(acts)[:k], size)                     # K×H×W
    thr = np.asarray(thresholds, np.float32).reshape(-1, 1, 1)
    score = np.where(up > thr, up / np.maximum(np.abs(thr), 1e-6), -np.inf)
    win = score.argmax(axis=0)
    fired = np.isfinite(score.max(axis=0))
    winner = np.where(fired, win, -1)
    concepts = np.where(fired, np.asarray(unit_concepts, np.int64)[win], 0)
    return concepts, winner


def fit(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Downscale uint8 H×W×3 so its longer side is at most `max_side` (never upscales)."""
    h, w = image.shape[:2]
    s = max(h, w)
    if s <= max_side:
        return image
    size = (max(1, round(w * max_side / s)), max(1, round(h * max_side / s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def encode(image: np.ndarray, fmt: str = "JPEG", quality: int = 88) -> bytes:
    """uint8 H×W×3 to JPEG/PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, quality=quality) if fmt == "JPEG" else \
        Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def placeholder(size: tuple[int, int] = (96, 96), text: str = "missing") -> np.ndarray:
    """A grey uint8 tile with a diagonal cross, for images that cannot be shown."""
    from PIL import ImageDraw
    im = Image.new("RGB", (size[1], size[0]), (60, 60, 66))
    d = ImageDraw.Draw(im)
    d.line([(0, 0), (size[1], size[0])], fill=(110, 110, 118), width=2)
    d.line([(0, size[0]), (size[1], 0)], fill=(110, 110, 118), width=2)
    d.text((4, 4), text, fill=(230, 230, 230))
    return np.asarray(im)


# ----------------------------------------------------------------------------- bound to a run
def _open_run_probe(run):
    from dissect.probes.registry import open_run_probe
    return open_run_probe(run)


class RunRenderer:
    """Images and overlays of one run, cached once as files under `<run>/cache/`.

    `probe` is a zero-argument callable returning the run's probe set (or raising); it is used
    for concept planes and for images whose file is gone. When the run folder is read-only the
    cache is skipped and pictures are made each time.
    """

    def __init__(self, run, probe: Callable[[], object] | None = None,
                 cache_dir: str | os.PathLike | None = None):
        self.run = run
        self._probe_fn = probe or (lambda: _open_run_probe(run))
        self._probe = None
        self._probe_error: str | None = None
        self._names: dict[int, str] | None = None
        stamp = str(run.info.get("created", "")) + str(run.info.get("updated", ""))
        self.cache_dir = Path(cache_dir) if cache_dir else run.path / "cache"
        self.sig = hashlib.sha1(stamp.encode()).hexdigest()[:10]
        self._thr: dict[str, np.ndarray] = {}
        self._topk: dict[str, dict] = {}

    # -- sources
    def probe(self):
        """The run's probe set, or None (see probe_error) when it cannot be reopened."""
        if self._probe is None and self._probe_error is None:
            try:
                self._probe = self._probe_fn()
            except Exception as e:  # noqa: BLE001 - any failure means "no probe", shown as text
                self._probe_error = f"{type(e).__name__}: {e}"
        return self._probe

    @property
    def probe_error(self) -> str | None:
        return self._probe_error

    def image(self, index: int) -> np.ndarray:
        """uint8 H×W×3 of probe image `index`: from images.csv's path, else from the probe."""
        row = self.run.images.iloc[int(index)]
        path = Path(str(row["path"]))
        if path.is_file():
            try:
                with Image.open(path) as im:
                    return fit(np.asarray(im.convert("RGB")))
            except OSError:
                pass
        probe = self.probe()
        if probe is not None:
            try:
                t = probe[int(index)].image
                return fit((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            except Exception:  # noqa: BLE001
                pass
        raise MissingImage(f"image {index} ({path}) is missing and the probe set cannot "
                           "rebuild it; restore the file or rerun the dissection")

    def planes(self, index: int) -> dict[str, np.ndarray]:
        """category -> P×h×w concept planes of image `index` (empty when no probe)."""
        probe = self.probe()
        if probe is None:
            return {}
        return dict(probe[int(index)].pixel)

    def scalars(self, index: int) -> dict[str, np.ndarray]:
        """category -> image-level concept ids of image `index`."""
        probe = self.probe()
        if probe is None:
            return {}
        return {k: np.asarray(v) for k, v in probe[int(index)].scalar.items()}

    @property
    def names(self) -> dict[int, str]:
        """concept id -> name, from concepts.csv."""
        if self._names is None:
            c = self.run.concepts
            self._names = dict(zip(c["concept"].astype(int), c["name"].astype(str)))
        return self._names

    def thresholds(self, layer: str) -> np.ndarray:
        if layer not in self._thr:
            self._thr[layer] = self.run.thresholds(layer)
        return self._thr[layer]

    def topk(self, layer: str) -> dict:
        if layer not in self._topk:
            self._topk[layer] = self.run.topk(layer)
        return self._topk[layer]

    # -- cache
    def _cached(self, key: str, make: Callable[[], np.ndarray], fmt: str = "JPEG") -> bytes:
        ext = "jpg" if fmt == "JPEG" else "png"
        path = self.cache_dir / self.sig / f"{key}.{ext}"
        from dissect.runs.safe import read_bytes
        try:                  # a regular file inside the cache, bounded: never a FIFO or a device
            return read_bytes(path, self.cache_dir, limit=64 << 20)
        except (OSError, ValueError):
            pass
        data = encode(make(), fmt)
        try:
            from dissect.runs.atomic import write_bytes
            write_bytes(path, data)
        except OSError:
            pass  # read-only run folder: serve uncached
        return data

    # -- pictures
    def unit_overlay(self, layer: str, unit: int, rank: int) -> bytes:
        """JPEG of the unit's rank-th top image, outside its mask dimmed ×0.2."""
        def make() -> np.ndarray:
            tk = self.topk(layer)
            index = int(tk["indices"][unit, rank])
            try:
                img = self.image(index)
            except MissingImage:
                return placeholder(text="image missing")
            mask = unit_mask(tk["maps"][unit, rank], self.thresholds(layer)[unit], img.shape[:2])
            return overlay(img, mask)
        return self._cached(f"{_safe(layer)}/u{int(unit)}-r{int(rank)}", make)

    def unit_strip(self, layer: str, unit: int, n: int = 4) -> list[bytes]:
        """The first `n` top-image overlays of a unit (the card thumbnail strip)."""
        k = self.topk(layer)["indices"].shape[1]
        return [self.unit_overlay(layer, unit, r) for r in range(min(n, k))]

    def unit_strip_jpeg(self, layer: str, unit: int, n: int = 4, height: int = 96) -> bytes:
        """One JPEG: the first `n` top-image overlays side by side, each `height` px tall."""
        def make() -> np.ndarray:
            tiles = []
            for data in self.unit_strip(layer, unit, n):
                im = Image.open(io.BytesIO(data)).convert("RGB")
                w = max(1, round(im.width * height / im.height))
                tiles.append(np.asarray(im.resize((w, height), Image.BILINEAR)))
            gap = np.full((height, 3, 3), 255, np.uint8)
            parts = []
            for t in tiles:
                parts += [t, gap]
            return np.concatenate(parts[:-1], axis=1) if parts else placeholder((height, height))
        return self._cached(f"{_safe(layer)}/strip-u{int(unit)}-n{n}-h{height}", make)

    def concept_overlay(self, index: int, concept: int, category: str) -> bytes:
        """JPEG of image `index` with the pixels of `concept` kept and the rest dimmed."""
        def make() -> np.ndarray:
            try:
                img = self.image(index)
            except MissingImage:
                return placeholder(text="image missing")
            planes = self.planes(index)
            if category in planes:
                mask = concept_mask(planes[category], concept, img.shape[:2])
            else:
                present = concept in set(self.scalars(index).get(category, np.zeros(0)).tolist())
                mask = np.full(img.shape[:2], present)
            return overlay(img, mask, edge=(255, 210, 0))
        return self._cached(f"img/{int(index)}-c{int(concept)}", make)

    def plain(self, index: int) -> bytes:
        """JPEG of probe image `index` (placeholder when missing)."""
        def make() -> np.ndarray:
            try:
                return self.image(index)
            except MissingImage:
                return placeholder(text="image missing")
        return self._cached(f"img/{int(index)}", make)

    def segmentation(self, index: int, category: str) -> tuple[bytes, list[int]]:
        """(PNG of image `index` coloured by its `category` concepts, concept ids present)."""
        img = self.image(index)
        planes = self.planes(index).get(category)
        if planes is None:
            return encode(img, "PNG"), []
        lab = label_planes_to_map(planes, img.shape[:2])
        ids = [int(c) for c in np.unique(lab) if c > 0]
        return self._cached(f"img/{int(index)}-seg-{_safe(category)}",
                            lambda: colorize(lab, img, names=self.names), "PNG"), ids

    def unit_segmentation(self, layer: str, index: int, units: list[int],
                          unit_concepts: list[int]) -> tuple[bytes, dict[int, int]]:
        """(PNG of image `index` segmented by `units`' labels, {concept: pixels}); needs acts."""
        acts = self.run.acts(layer)
        if acts is None:
            raise MissingImage(f"layer {layer} of {self.run.path} kept no acts.npy; rerun the "
                               "dissection to see images segmented by units")
        img = self.image(index)
        thr = self.thresholds(layer)[units]
        lab, _ = segment_by_units(np.asarray(acts[int(index)][units]), thr,
                                  np.asarray(unit_concepts), img.shape[:2])
        ids, counts = np.unique(lab[lab > 0], return_counts=True)
        return encode(colorize(lab, img, names=self.names), "PNG"), {int(c): int(n) for c, n in zip(ids, counts)}


def _safe(name: str) -> str:
    """A file-name-safe version of a layer name ("features.11" stays, "/" and ".." go)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).replace("..", "_")
