"""Several segmenters as one: concept ids offset so they never collide.

    seg = MergedSegmenter([ColorNamer(), ADE20KSegmenter()])
    seg.concepts()            # colour terms (ids 1..11), then ADE20K classes (ids 12..161)
    seg.offsets               # [0, 11]
    [out] = seg.segment(images, (112, 112))   # out.pixel = {"color": 1×h×w, "object": 1×h×w}
    seg.combine([part_out_color, part_out_ade])   # merge results segmented (or cached) per part

Parts that share a category stack their planes (P grows) rather than overwrite each other. A
concept name that an earlier part already uses in the same category gets " (<part name>)".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from segmenters.base import Segmentation, Segmenter, SegmenterError


class MergedSegmenter:
    """The union of `parts`; part j's concept id i becomes i + offsets[j]."""

    from_files = False

    def __init__(self, parts: Sequence[Segmenter]) -> None:
        if not parts:
            raise SegmenterError("a merged segmenter needs at least one part")
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise SegmenterError(f"segmenter listed twice in {','.join(names)}; name each once")
        self.parts = list(parts)
        self.name = "+".join(names)
        self.version = "+".join(p.version for p in parts)
        self.categories = list(dict.fromkeys(c for p in parts for c in p.categories))
        self.pixel_categories = list(dict.fromkeys(c for p in parts for c in p.pixel_categories))
        self.scalar_categories = list(dict.fromkeys(c for p in parts for c in p.scalar_categories))
        both = set(self.pixel_categories) & set(self.scalar_categories)
        if both:
            raise SegmenterError(f"category {sorted(both)[0]} is pixel-level in one segmenter of "
                                 f"{self.name} and image-level in another; use one of them")
        sizes = {p.input_size for p in parts if p.input_size}
        self.input_size = sizes.pop() if len(sizes) == 1 else None
        self.description = " + ".join(getattr(p, "description", p.name) for p in parts)

    @property
    def offsets(self) -> list[int]:
        """Id offset of each part (the number of concepts before it)."""
        out, n = [], 0
        for p in self.parts:
            out.append(n)
            n += len(p.concepts())
        return out

    def concepts(self) -> list[tuple[str, str]]:
        """All parts' concepts in part order; duplicate (name, category) pairs disambiguated."""
        seen: set[tuple[str, str]] = set()
        out = []
        for p in self.parts:
            for name, cat in p.concepts():
                if (name, cat) in seen:
                    name = f"{name} ({p.name})"
                seen.add((name, cat))
                out.append((name, cat))
        return out

    def combine(self, results: Sequence[Segmentation]) -> Segmentation:
        """One image's per-part results (in part order) -> one Segmentation with global ids."""
        merged = Segmentation()
        for res, off in zip(results, self.offsets):
            for kind in ("pixel", "scalar"):
                target = getattr(merged, kind)
                for cat, a in getattr(res, kind).items():
                    a = np.where(a > 0, a + off, 0).astype(np.int32)
                    target[cat] = a if cat not in target else np.concatenate([target[cat], a])
        return merged

    def segment(self, images: np.ndarray, mask_size: tuple[int, int],
                paths: Sequence[str] | None = None) -> list[Segmentation]:
        """Run every part on the batch and combine per image."""
        per_part = [p.segment(images, mask_size, paths=paths) for p in self.parts]
        return [self.combine(list(r)) for r in zip(*per_part)]
