"""The Segmenter protocol: concept labels for a batch of images, as a probe item carries them.

    seg = make_segmenter("color")                    # segmenters.registry
    seg.concepts()                                   # [("black", "color"), ("blue", "color"), ...]
    out = seg.segment(images_uint8, mask_size=(112, 112))   # images: B×H×W×3 uint8 RGB
    out[0].pixel["color"]                            # int32 P×112×112, ids 1..len(concepts), 0 = none
    out[0].scalar.get("scene")                       # int32 [L] image-level ids (0-padded lists ok)

Input: a batch of **uint8 RGB arrays, B×H×W×3** (what PIL gives; a colour lookup table indexes it
directly). Callers resize every image to `segmenter.input_size` when it names one (models want
their own resolution), else to any size they like; the segmenter returns planes at `mask_size`.
Concept ids are local: concept i of `concepts()` has id i + 1; 0 means unlabelled. A merged
segmenter (segmenters.merged) offsets each part's ids so they never collide.

Ground-truth segmenters (Broden, ToyWorld) read labels from their own files, so they need the
image's path (`paths=`) and ignore its pixels; they set `from_files = True`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from dissect.errors import ProbeError


class SegmenterError(ProbeError):
    """A segmenter that cannot run (missing weights, bad spec); the message names the fix."""


@dataclass
class Segmentation:
    """One image's labels: the `pixel` / `scalar` fields of a dissect.probes.registry.ProbeItem."""
    pixel: dict[str, np.ndarray] = field(default_factory=dict)    # cat -> int32 P×h×w
    scalar: dict[str, np.ndarray] = field(default_factory=dict)   # cat -> int32 [L]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat dict for np.savez: `pixel/<cat>`, `scalar/<cat>` (stored as small ints)."""
        out = {}
        for kind, planes in (("pixel", self.pixel), ("scalar", self.scalar)):
            for cat, a in planes.items():
                out[f"{kind}/{cat}"] = a.astype(np.uint16 if a.max(initial=0) < 65536 else np.int32)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "Segmentation":
        """Inverse of `to_arrays` (accepts an np.load NpzFile)."""
        seg = cls()
        for key in arrays.keys():
            kind, _, cat = key.partition("/")
            if kind in ("pixel", "scalar"):
                getattr(seg, kind)[cat] = np.asarray(arrays[key]).astype(np.int32)
        return seg


@runtime_checkable
class Segmenter(Protocol):
    """What the folder probe (and anything else) needs from a segmenter."""

    name: str                    # registry name, e.g. "color", "ade20k"
    version: str                 # bump when outputs change: it keys the on-disk cache
    categories: list[str]        # categories in a fixed order
    pixel_categories: list[str]  # pixel-level ones (P×h×w planes)
    scalar_categories: list[str]  # image-level ones ([L] id lists)
    input_size: int | None       # preferred square input size, None = caller's choice
    from_files: bool             # True: labels come from files by path, pixels are ignored

    def concepts(self) -> list[tuple[str, str]]:
        """(name, category) per concept; concept i has id i + 1."""
        ...

    def segment(self, images: np.ndarray, mask_size: tuple[int, int],
                paths: Sequence[str] | None = None) -> list[Segmentation]:
        """Label a B×H×W×3 uint8 batch; one Segmentation per image, planes at `mask_size`."""
        ...


def check_images(images: np.ndarray) -> np.ndarray:
    """Validate a B×H×W×3 uint8 batch (a single H×W×3 image becomes a batch of one)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise SegmenterError(
            f"segmenters take uint8 RGB images shaped B×H×W×3, got {images.dtype} "
            f"{tuple(images.shape)}; convert with np.asarray(PIL.Image.open(f).convert('RGB'))")
    return images
