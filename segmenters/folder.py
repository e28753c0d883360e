"""Any folder of images as a probe set, labelled by segmenters (`--probe folder:DIR`).

    probe = FolderProbe("photos/", segmenter="color,ade20k", size=224)   # via open_probe too
    probe[0].pixel["color"]          # int32 1×112×112 colour-term ids
    probe.skipped, probe.skipped_paths   # unreadable images left out (the run goes on)

Every image under DIR (recursively; jpg, png, bmp, gif, tif, webp) is resized to size×size (the
whole image, aspect not kept, as Broden's 224 px images) and labelled at half that size. Labels
are computed once, up front and with a progress bar, then cached per image and per segmenter in
`<cache>/segments/<name>-<version>/<in>x<mask>/` keyed by the file's content hash (cache =
`cache_dir`, else $DISSECT_CACHE, else `<repo>/.cache`), so a second run, or `Run.probe()` in the
app, does not segment again (file hashes are remembered by size and mtime in `segments/hashes/`,
so a reopen does not even reread the files). `__getitem__` only decodes the image and reads cached labels, so
DataLoader workers stay cheap and no worker ever holds a segmentation model. Ground-truth parts
(broden:DIR, toyworld) read their label files in `__getitem__` instead, and their mask PNGs
are not taken for photos (so `folder:BRODEN/images --segmenter color,broden:BRODEN` works).
Options: segmenter (spec for segmenters.make_segmenter), categories, split (first folder level,
e.g. DIR/val/...), limit (a seeded random sample of that many readable images, kept in path
order), seed, cache_dir, size,
device (for model segmenters; default cuda when available), progress.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from dissect.probes.images import to_rgb
from dissect.errors import ProbeError
from dissect.probes.types import ProbeItem, ProbeSet
from dissect.runs.atomic import atomic_write
from segmenters import make_segmenter
from segmenters.base import Segmentation
from segmenters.merged import MergedSegmenter

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                 Image.DecompressionBombError)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where segmentations are cached: cache_dir, $DISSECT_CACHE or <repo>/.cache, + segments/."""
    base = cache_dir or os.environ.get("DISSECT_CACHE") or Path(__file__).resolve().parents[1] / ".cache"
    return Path(base).expanduser() / "segments"


def read_rgb(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """uint8 H×W×3 RGB of an image file, resized to size×size (bilinear) when size is given."""
    with Image.open(path) as im:
        im = to_rgb(im)                          # 16-bit / float scaled, not clipped
        if size and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def file_hash(path: Path) -> str:
    """sha1 of the file's bytes (the cache key; renaming or moving a file keeps its labels)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class HashIndex:
    """Remembered content hashes of one folder's files, keyed by (size, mtime), so reopening a
    large folder does not read every byte again. Stored as JSON under the cache, atomically."""

    def __init__(self, cache: Path, directory: Path) -> None:
        key = hashlib.sha1(directory.as_posix().encode()).hexdigest()[:16]
        self.path = cache / "hashes" / f"{key}.json"
        try:
            self.known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def hash(self, path: Path) -> str:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self.known.get(str(path))
        if entry and entry[:2] == stamp:
            return entry[2]
        digest = file_hash(path)
        self.known[str(path)] = stamp + [digest]
        self.changed = True
        return digest

    def is_bad(self, path: Path) -> bool:
        """Whether this very file (same size and mtime) failed to decode before."""
        entry = self.known.get(str(path))
        return bool(entry and len(entry) > 3 and entry[3])

    def mark_bad(self, path: Path) -> None:
        entry = self.known.get(str(path))
        if entry:
            self.known[str(path)] = entry[:3] + [True]
            self.changed = True

    def save(self) -> None:
        if self.changed:
            try:
                atomic_write(self.path, lambda f: f.write(json.dumps(self.known).encode()))
            except (PermissionError, NotADirectoryError, FileExistsError):
                return   # only a speed-up: files are hashed again next time
            self.changed = False


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
            raise ProbeError(f"cannot write the segmentation cache {path.parent} ({e.strerror}); "
                             "set DISSECT_CACHE to a writable folder") from None
        raise


class FolderProbe(ProbeSet):
    """A folder of images labelled by segmenters; see the module docstring."""

    def __init__(self, directory: str | os.PathLike, segmenter: str | None = "color",
                 categories: Sequence[str] | str | None = None, split: str | None = None,
                 limit: int | None = None, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, size: int = 224,
                 device: str | None = None, batch_size: int = 8, progress: bool = True,
                 **_ignored) -> None:
        self.directory = Path(directory).expanduser().resolve()
        if not self.directory.is_dir():
            raise ProbeError(f"image folder {self.directory} does not exist; pass "
                             "--probe folder:DIR with a folder of images")
        self.size = int(size)
        self.mask_size = (self.size // 2, self.size // 2)
        self.segmenter_spec = segmenter or "color"
        if device is None:   # segmentation models use the GPU when there is one
            device = "cuda" if torch.cuda.is_available() else "cpu"
        seg = make_segmenter(self.segmenter_spec, device=device, seed=seed, cache_dir=cache_dir)
        self.segmenter = seg if isinstance(seg, MergedSegmenter) else MergedSegmenter([seg])
        self.cache = cache_root(cache_dir)
        self._hashes = HashIndex(self.cache, self.directory)
        self._select_categories(categories)

        paths, splits = self._list(split)
        self.skipped_paths: list[str] = []
        order = np.arange(len(paths))
        want = len(paths)
        if limit is not None and 0 < int(limit) < len(paths):   # a seeded sample of readable
            order, want = np.random.default_rng(seed).permutation(len(paths)), int(limit)
        keep: list[int] = []
        hashes: dict[int, str] = {}
        sizes: dict[int, tuple[int, int]] = {}
        tried = 0
        while len(keep) < want and tried < len(paths):   # more rounds only to replace bad files
            chunk = [int(i) for i in order[tried:tried + want - len(keep)]]
            tried += len(chunk)
            k, h, z = self._check_and_segment([paths[i] for i in chunk], batch_size, progress)
            keep += [chunk[j] for j in k]
            hashes.update({chunk[j]: v for j, v in enumerate(h)})
            sizes.update({chunk[j]: v for j, v in z.items()})
        keep.sort()
        self._hashes.save()
        del self._hashes
        if not keep:
            raise ProbeError(f"no readable images in {self.directory} ({len(self.skipped_paths)} "
                             "could not be decoded); check the files")
        self.skipped = len(self.skipped_paths)
        self.images = pd.DataFrame({
            "index": np.arange(len(keep)),
            "path": [str(paths[i]) for i in keep],
            "split": [splits[i] for i in keep],
            "width": [sizes[i][0] for i in keep],
            "height": [sizes[i][1] for i in keep],
            "hash": [hashes[i] for i in keep],
        })
        self.description = (f"folder {self.directory.name}: {len(keep)} images labelled by "
                            f"{self.segmenter.name}" + (f", {self.skipped} unreadable skipped"
                                                        if self.skipped else ""))

    # -- setup
    def _select_categories(self, categories) -> None:
        seg = self.segmenter
        if isinstance(categories, str):
            categories = [c.strip() for c in categories.split(",") if c.strip()]
        if categories:
            unknown = [c for c in categories if c not in seg.categories]
            if unknown:
                raise ProbeError(f"segmenter {seg.name} gives no category {', '.join(unknown)}; "
                                 f"choose from: {', '.join(seg.categories)}")
        chosen = [c for c in seg.categories if not categories or c in categories]
        self.categories = chosen
        self.pixel_categories = [c for c in seg.pixel_categories if c in chosen]
        self.scalar_categories = [c for c in seg.scalar_categories if c in chosen]
        concepts = seg.concepts()
        rows = [(i + 1, n, c) for i, (n, c) in enumerate(concepts) if c in chosen]
        self.concepts = pd.DataFrame(rows, columns=["concept", "name", "category"])
        self.concepts["concept"] = self.concepts["concept"].astype(np.int64)

    def _list(self, split) -> tuple[list[Path], list[str]]:
        files = sorted(p for p in self.directory.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                       and not any(part.startswith(".") for part in
                                   p.relative_to(self.directory).parts))
        if not files:
            raise ProbeError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {self.directory}; "
                             "pass a folder that holds image files (subfolders are searched)")
        gts = [p for p in self.segmenter.parts if hasattr(p, "is_label_file")]
        files = [f for f in files if not any(g.is_label_file(f) for g in gts)]
        if not files:
            raise ProbeError(f"{self.directory} holds only label masks; point --probe "
                             "folder: at the photos")
        rel = [p.relative_to(self.directory).parts for p in files]
        splits = [r[0] if len(r) > 1 else "" for r in rel]
        if split:
            known = sorted(set(splits) - {""})
            pick = [i for i, s in enumerate(splits) if s == split]
            if not pick:
                raise ProbeError(f"no images under {self.directory / split}; splits are the "
                                 f"first-level folders: {', '.join(known) or '(none)'}")
            files, splits = [files[i] for i in pick], [splits[i] for i in pick]
        return files, splits

    def _entry(self, part, digest: str) -> Path:
        insize = part.input_size or self.size
        return (self.cache / f"{part.name}-{part.version}" / f"{insize}x{self.mask_size[0]}"
                / digest[:2] / f"{digest}.npz")

    def _check_and_segment(self, paths: list[Path], batch_size: int, progress: bool):
        """Hash every file, find what the cache lacks, segment that in batches (with a bar)."""
        parts = [p for p in self.segmenter.parts if not p.from_files]
        hashes: list[str] = []
        pending: list[int] = []
        for i, path in enumerate(paths):
            try:
                hashes.append(self._hashes.hash(path))
            except OSError as e:
                hashes.append("")
                self._skip(path, e)
                continue
            if self._hashes.is_bad(path):   # failed before and unchanged: skip, do not retry
                hashes[i] = ""
                self._skip(path, ValueError("could not be decoded on an earlier open"))
                continue
            if not parts or not all(self._entry(p, hashes[i]).exists() for p in parts):
                pending.append(i)
        bad = {i for i, h in enumerate(hashes) if not h}
        if pending:
            from tqdm import tqdm
            for p in parts:   # a model segmenter fails here, before the bar, if it has no weights
                getattr(p, "load", lambda: None)()
            bar = tqdm(total=len(pending), desc=f"segmenting ({self.segmenter.name})",
                       unit="img", disable=not progress, file=sys.stderr)
            try:
                for s in range(0, len(pending), batch_size):
                    batch = pending[s:s + batch_size]
                    bad |= self._segment_batch([paths[i] for i in batch],
                                               [hashes[i] for i in batch], batch, parts)
                    bar.update(len(batch))
            finally:
                bar.close()
            for p in parts:   # no DataLoader worker needs the model: free it
                getattr(p, "release", lambda: None)()
        keep, sizes = [], {}
        for i, path in enumerate(paths):
            if i in bad:
                continue
            try:
                with Image.open(path) as im:
                    sizes[i] = im.size
            except DECODE_ERRORS as e:
                self._skip(path, e)
                continue
            keep.append(i)
        return keep, hashes, sizes

    def _segment_batch(self, paths, digests, idx, parts) -> set[int]:
        originals, ok = [], []
        bad = set()
        for path, i in zip(paths, idx):
            try:
                with Image.open(path) as im:
                    originals.append(to_rgb(im))
                ok.append(True)
            except DECODE_ERRORS as e:
                self._skip(path, e)
                self._hashes.mark_bad(path)
                bad.add(i)
                ok.append(False)
        good = [j for j, o in enumerate(ok) if o]
        if not good:
            return bad
        for part in parts:
            todo = [j for j in good if not self._entry(part, digests[j]).exists()]
            if not todo:
                continue
            insize = part.input_size or self.size
            rows = [good.index(j) for j in todo]
            batch = np.stack([np.asarray(originals[r].resize(
                (insize, insize), Image.Resampling.BILINEAR), np.uint8) for r in rows])
            results = part.segment(batch, self.mask_size, paths=[str(paths[j]) for j in todo])
            for j, res in zip(todo, results):
                _save_npz(self._entry(part, digests[j]), res.to_arrays())
        return bad

    def _skip(self, path: Path, err: Exception) -> None:
        from tqdm import tqdm
        self.skipped_paths.append(str(path))
        tqdm.write(f"warning: skipped unreadable image {path} ({type(err).__name__}: {err})",
                   file=sys.stderr)

    # -- items
    def labels(self, i: int) -> Segmentation:
        """Image i's labels from the cache (and ground-truth files), ids as in `concepts`."""
        row = self.images.iloc[int(i)]
        results = []
        for part in self.segmenter.parts:
            if part.from_files:
                results += part.segment(None, self.mask_size, paths=[row["path"]])
                continue
            entry = self._entry(part, row["hash"])
            try:
                with np.load(entry) as z:
                    results.append(Segmentation.from_arrays(z))
            except (OSError, ValueError) as e:
                raise ProbeError(f"cached segmentation {entry} of {row['path']} is unreadable "
                                 f"({e}); delete it and open the probe again") from None
        seg = self.segmenter.combine(results)
        seg.pixel = {c: a for c, a in seg.pixel.items() if c in self.categories}
        seg.scalar = {c: a for c, a in seg.scalar.items() if c in self.categories}
        return seg

    def __getitem__(self, i: int) -> ProbeItem:
        i = int(i)
        image, pixel, scalar = torch.empty(0), {}, {}
        if self.decode_images:
            path = self.images["path"].iat[i]
            try:
                rgb = read_rgb(path, self.size)
            except DECODE_ERRORS as e:
                raise ProbeError(f"image {path} cannot be read any more ({e}); restore it or "
                                 "open the probe again to skip it") from None
            image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)
        if self.decode_labels:
            seg = self.labels(i)
            pixel, scalar = seg.pixel, seg.scalar
        return ProbeItem(index=i, image=image, pixel=pixel, scalar=scalar)
