"""Ground-truth segmenters: a Broden-format folder's own label files, served as a segmenter.

    gt = BrodenGroundTruth("/data/broden1_224", categories=["object", "color"])
    [out] = gt.segment(images, (112, 112), paths=["/data/broden1_224/images/ade20k/x.jpg"])
    tw = toyworld_ground_truth("/cache/toyworld-0-500")    # the same over a ToyWorld folder

Labels come from the folder through dissect.probes.broden.BrodenProbe (no parsing of our own); pixels
are ignored and images are matched by path: relative to `<dir>/images/`, else by file name when
that is unique. An image the folder does not list gets no labels. Concept i of `concepts()` is
the folder's i-th label in label.csv order (ids are renumbered 1..N only if label.csv has gaps).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from dissect.probes.broden import BrodenProbe
from segmenters.base import Segmentation, SegmenterError


class BrodenGroundTruth:
    """A Broden-format folder's labels by image path; `from_files = True`."""

    from_files = True
    input_size = None

    def __init__(self, directory: str | Path, *, name: str = "broden",
                 categories: Sequence[str] | str | None = None) -> None:
        self.probe = BrodenProbe(directory, categories=categories)
        self.probe.decode_images = False
        self.directory = self.probe.directory
        self.name = name
        self.description = (f"ground truth of the Broden-format folder {self.directory} "
                            "(images matched by path)")
        self.categories = list(self.probe.categories)
        self.pixel_categories = list(self.probe.pixel_categories)
        self.scalar_categories = list(self.probe.scalar_categories)
        table = self.probe.concepts
        ids = table["concept"].to_numpy()
        self._concepts = list(zip(table["name"], table["category"]))
        self._remap = np.zeros(int(ids.max(initial=0)) + 1, np.int32)
        self._remap[ids] = np.arange(1, len(ids) + 1)
        rel = list(self.probe.rows["image"])
        self._by_rel = {r: i for i, r in enumerate(rel)}
        names: dict[str, list[int]] = {}
        for i, r in enumerate(rel):
            names.setdefault(Path(r).name, []).append(i)
        self._by_name = {n: v[0] for n, v in names.items() if len(v) == 1}
        masks = set()
        for cat in self.pixel_categories:
            for cell in self.probe.rows[cat]:
                masks.update(t for t in cell.split(";") if t and not t.isdigit())
        self._masks = {(self.directory / "images" / m).as_posix() for m in masks}
        index = self.directory / "index.csv"
        st = index.stat()
        self.version = "1-" + hashlib.sha1(
            f"{self.directory}|{st.st_size}|{int(st.st_mtime)}|{self.categories}".encode()
        ).hexdigest()[:10]

    def concepts(self) -> list[tuple[str, str]]:
        """The folder's concepts (name, primary category) in label.csv order."""
        return list(self._concepts)

    def is_label_file(self, path: str | Path) -> bool:
        """True for the folder's own mask PNGs (a folder probe over `<dir>/images` skips them)."""
        return Path(path).expanduser().resolve().as_posix() in self._masks

    def row_of(self, path: str) -> int | None:
        """The folder's row for an image path, or None when it does not list it."""
        p = Path(path).expanduser().resolve()
        try:
            rel = p.relative_to(self.directory / "images").as_posix()
            if rel in self._by_rel:
                return self._by_rel[rel]
        except ValueError:
            pass
        return self._by_name.get(p.name)

    def segment(self, images: np.ndarray | None, mask_size: tuple[int, int],
                paths: Sequence[str] | None = None) -> list[Segmentation]:
        """Labels of each path's row, resized (nearest) to `mask_size`; pixels are ignored."""
        if paths is None:
            raise SegmenterError(f"the {self.name} ground-truth segmenter matches images by "
                                 "path; pass paths= (folder probes do)")
        out = []
        for path in paths:
            row = self.row_of(path)
            seg = Segmentation()
            if row is not None:
                item = self.probe[row]
                for cat, planes in item.pixel.items():
                    seg.pixel[cat] = self._resize(self._remap_ids(planes), mask_size)
                for cat, ids in item.scalar.items():
                    seg.scalar[cat] = self._remap_ids(ids)
            out.append(seg)
        return out

    def _remap_ids(self, a: np.ndarray) -> np.ndarray:
        n = len(self._remap)   # ids label.csv does not list become 0
        return np.where(a < n, self._remap[np.clip(a, 0, n - 1)], 0).astype(np.int32)

    @staticmethod
    def _resize(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        h, w = size
        if planes.shape[-2:] == (h, w):
            return planes.astype(np.int32)
        return np.stack([np.asarray(Image.fromarray(p.astype(np.int32)).resize(
            (w, h), Image.Resampling.NEAREST)) for p in planes]).astype(np.int32)


def toyworld_ground_truth(directory: str | Path | None = None, *, n: int | None = None,
                          seed: int = 0, cache_dir: str | None = None) -> BrodenGroundTruth:
    """ToyWorld's labels: a ToyWorld folder (Broden format), or the cached world of n images."""
    if directory is None:
        from dissect.toyworld import toyworld_probe   # builds the world once, then reuses it
        world = toyworld_probe(n, seed=seed, cache_dir=cache_dir)
        directory = getattr(world, "directory", None)
        if directory is None:
            raise SegmenterError("the ToyWorld probe has no Broden folder; pass toyworld:DIR")
    gt = BrodenGroundTruth(directory, name="toyworld")
    gt.description = f"ToyWorld ground truth from {gt.directory} (images matched by path)"
    return gt
