"""Every concept's mask on every probe image, as packed bits, sparse by image.

    index = LabelIndex.from_probe(probe, concept_ids)      # decodes the labels once
    index.save(run.path / "labels.npz"); LabelIndex.load(run.path / "labels.npz")
    index.sizes(subset)                # int64 [C]: pixels carrying each concept (in the subset)
    index.dense(formula)               # uint64 [N, words]: the formula's mask on every image
    index.intersections(formula, subset)   # int64 [C]: |formula ∩ c| for every concept c
    pix, con = index.lookup(img, pix)  # which concepts each listed pixel carries

One entry per (concept, image) where the concept occurs: its mask at the probe's mask
resolution, packed 64 pixels to a word (np.packbits; popcount with np.bitwise_count). An
image-level label (scene, texture) covers the whole image, as in the single-label IoU.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dissect.formulas.grammar import AND, OR, Formula, canonical
from dissect.runs.atomic import write_npz


def pack(mask: np.ndarray, words: int) -> np.ndarray:
    """bool [..., H*W] -> uint64 [..., words] (bit j of word w is pixel 64w + j)."""
    b = np.packbits(mask, axis=-1, bitorder="little")
    pad = words * 8 - b.shape[-1]
    if pad:
        b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(b).view(np.uint64)


def unpack(bits: np.ndarray, n_pixels: int) -> np.ndarray:
    """uint64 [..., words] -> bool [..., n_pixels]."""
    b = np.ascontiguousarray(bits).view(np.uint8)
    return np.unpackbits(b, axis=-1, count=n_pixels, bitorder="little").astype(bool)


def popcount(bits: np.ndarray) -> np.ndarray:
    """Set bits per row: uint64 [n, words] -> int64 [n]."""
    return np.bitwise_count(bits).sum(axis=-1, dtype=np.int64)


@dataclass
class LabelIndex:
    n_images: int
    shape: tuple[int, int]            # mask (H, W)
    n_concepts: int
    entry_img: np.ndarray             # int32 [E], entries sorted by (concept, image)
    entry_con: np.ndarray             # int32 [E]
    bits: np.ndarray                  # uint64 [E, words]
    _dense: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _inter: dict = field(default_factory=dict, repr=False)
    dense_cache: int = 48             # formula masks kept (each N×words×8 bytes)

    def __post_init__(self):
        self.n_pixels = self.shape[0] * self.shape[1]
        self.words = self.bits.shape[1]
        self.pop = popcount(self.bits)
        self.con_start = np.searchsorted(self.entry_con, np.arange(self.n_concepts + 1))
        self.by_img = np.argsort(self.entry_img, kind="stable")
        self.img_start = np.searchsorted(self.entry_img[self.by_img], np.arange(self.n_images + 1))

    # ------------------------------------------------------------------ building, files
    @classmethod
    def from_probe(cls, probe, concept_ids: np.ndarray, batch_size: int = 64,
                   progress: bool = False) -> "LabelIndex":
        """Decode every image's labels (images are not decoded) into an index."""
        from tqdm.auto import tqdm

        from dissect.probes.types import probe_loader
        probe = copy.copy(probe)
        probe.decode_images = False
        ids = np.asarray(concept_ids, np.int64)
        lut = np.full(int(ids.max()) + 2 if len(ids) else 2, -1, np.int64)
        lut[ids] = np.arange(len(ids))
        h, w = probe.mask_size
        hw = h * w
        words = (hw + 63) // 64
        imgs, cons, bits = [], [], []
        bar = tqdm(total=len(probe), unit="img", desc="labels", disable=not progress)
        for batch in probe_loader(probe, batch_size, 0):
            planes = [batch.pixel[c].numpy() for c in sorted(batch.pixel)]
            scal = [batch.scalar[c].numpy() for c in sorted(batch.scalar)]
            for b, i in enumerate(batch.index.tolist()):
                cols = [lut[np.clip(p[b].reshape(p.shape[1], -1), 0, len(lut) - 1)]
                        for p in planes]
                whole = set()
                for s in scal:
                    v = lut[np.clip(s[b], 0, len(lut) - 1)]
                    whole.update(int(c) for c in v[(v >= 0) & (s[b] > 0)])
                masks: dict[int, np.ndarray] = {}
                if cols:
                    flat = np.concatenate(cols, 0)          # planes × hw; -1 = no concept
                    u, inv = np.unique(flat, return_inverse=True)
                    z = np.zeros((len(u), hw), bool)
                    z[inv.reshape(flat.shape), np.arange(hw)[None, :]] = True
                    masks = {int(c): z[j] for j, c in enumerate(u) if c >= 0}
                for c in whole:
                    masks[c] = np.ones(hw, bool)
                for c in sorted(masks):
                    imgs.append(i)
                    cons.append(c)
                    bits.append(masks[c])
            bar.update(len(batch.index))
        bar.close()
        if bits:
            packed = pack(np.stack(bits), words)
        else:
            packed = np.zeros((0, words), np.uint64)
        img, con = np.asarray(imgs, np.int32), np.asarray(cons, np.int32)
        order = np.lexsort((img, con))
        return cls(len(probe), (h, w), len(ids), img[order], con[order], packed[order])

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"entry_img": self.entry_img, "entry_con": self.entry_con, "bits": self.bits,
                "meta": np.array([self.n_images, self.shape[0], self.shape[1], self.n_concepts])}

    def save(self, path: str | Path) -> None:
        """labels.npz, with `sha256`: a digest of its arrays (checked by `load`)."""
        from dissect.runs.digest import digest
        arrays = self._arrays()
        write_npz(path, **arrays, sha256=np.array(digest(arrays)))

    @classmethod
    def load(cls, path: str | Path) -> "LabelIndex":
        """Read labels.npz with dissect.runs.safe and check it: its digest, shapes and ranges
        (RunError naming the file otherwise: a truncated, zeroed or out-of-range file)."""
        from dissect.errors import RunError
        from dissect.runs import safe
        from dissect.runs.digest import verify
        path = Path(path)
        fix = "delete it; `python -m dissect explain` builds it again from the probe"
        z = safe.read_npz(path, path.parent, owner=f"run '{path.parent.name}'", fix=fix)
        what = f"labels.npz of run '{path.parent.name}'"
        need = ("entry_img", "entry_con", "bits", "meta")
        if any(k not in z for k in need):
            raise RunError(f"{what} lacks {', '.join(k for k in need if k not in z)}; {fix}")
        arrays = {k: z[k] for k in need}
        sha = z.get("sha256")
        verify(str(sha) if sha is not None and sha.ndim == 0 else None, tensors=arrays,
               what=what, fix=fix)
        meta = arrays["meta"]
        if meta.shape != (4,) or meta.dtype.kind not in "iu" or (meta < 0).any():
            raise RunError(f"{what}: meta is not 4 counts; {fix}")
        n, h, w, c = (int(v) for v in meta)
        img, con, bits = arrays["entry_img"], arrays["entry_con"], arrays["bits"]
        words = -(-h * w // 64)
        if img.ndim != 1 or con.shape != img.shape or bits.shape != (len(img), words) \
                or bits.dtype != np.uint64 or (len(img) and (img.min() < 0 or img.max() >= n
                                                             or con.min() < 0 or con.max() >= c)):
            raise RunError(f"{what}: its entries do not fit {n} images of {h}x{w} and {c} "
                           f"concepts; {fix}")
        return cls(n, (h, w), c, img, con, bits)

    # ------------------------------------------------------------------ counts
    def _in(self, subset: np.ndarray | None) -> np.ndarray | None:
        return None if subset is None else subset[self.entry_img]

    def sizes(self, subset: np.ndarray | None = None) -> np.ndarray:
        """int64 [C]: pixels carrying each concept (over the subset's images)."""
        sel = self._in(subset)
        con, pop = (self.entry_con, self.pop) if sel is None else (self.entry_con[sel],
                                                                  self.pop[sel])
        return np.bincount(con, weights=pop, minlength=self.n_concepts).astype(np.int64)

    def leaf(self, c: int) -> np.ndarray:
        """uint64 [N, words]: concept c's mask on every image."""
        out = np.zeros((self.n_images, self.words), np.uint64)
        sl = slice(self.con_start[c], self.con_start[c + 1])
        out[self.entry_img[sl]] = self.bits[sl]
        return out

    def dense(self, f: Formula) -> np.ndarray:
        """uint64 [N, words]: the formula's mask (cached by canonical form, least recent out)."""
        key = canonical(f)
        got = self._dense.get(key)
        if got is not None:
            self._dense.move_to_end(key)
            return got
        out = self.leaf(f[0]) if len(f) == 1 else self.dense(f[:-1]).copy()
        if len(f) > 1:
            op, c = f[-1]
            sl = slice(self.con_start[c], self.con_start[c + 1])
            rows = self.entry_img[sl]
            if op == OR:
                out[rows] |= self.bits[sl]
            elif op == AND:
                keep = np.zeros(self.n_images, bool)
                keep[rows] = True
                out[rows] &= self.bits[sl]
                out[~keep] = 0
            else:
                out[rows] &= ~self.bits[sl]
        self._dense[key] = out
        if len(self._dense) > self.dense_cache:
            self._dense.popitem(last=False)
        return out

    def size(self, f: Formula, subset: np.ndarray | None = None) -> int:
        """Pixels where the formula holds (over the subset's images)."""
        d = self.dense(f)
        return int(popcount(d if subset is None else d[subset]).sum())

    def intersections(self, f: Formula, subset: np.ndarray | None = None,
                      subset_key=None) -> np.ndarray:
        """int64 [C]: |f ∩ c| for every concept c over the subset (cached per subset_key)."""
        key = (canonical(f), subset_key)
        got = self._inter.get(key)
        if got is not None:
            return got
        d = self.dense(f)
        live = d.any(axis=1)
        if subset is not None:
            live &= subset
        sel = np.flatnonzero(live[self.entry_img])
        counts = popcount(d[self.entry_img[sel]] & self.bits[sel])
        out = np.bincount(self.entry_con[sel], weights=counts,
                          minlength=self.n_concepts).astype(np.int64)
        self._inter[key] = out
        return out

    def lookup(self, img: np.ndarray, pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For listed pixels (image, flat pixel): (row in the list, concept) for every concept
        each carries."""
        img = np.asarray(img, np.int64)
        pix = np.asarray(pix, np.int64)
        n_e = self.img_start[img + 1] - self.img_start[img]
        total = int(n_e.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows = np.repeat(np.arange(len(img)), n_e)
        first = np.repeat(self.img_start[img] - (np.cumsum(n_e) - n_e), n_e)
        e = self.by_img[first + np.arange(total)]
        p = pix[rows]
        word = self.bits[e, p >> 6]
        hit = ((word >> (p & 63).astype(np.uint64)) & np.uint64(1)).astype(bool)
        return rows[hit], self.entry_con[e[hit]].astype(np.int64)

    def image_masks(self, f: Formula, images: np.ndarray) -> np.ndarray:
        """bool [len(images), H, W]: the formula's mask on the given images (app overlays)."""
        d = self.dense(f)[np.asarray(images, np.int64)]
        return unpack(d, self.n_pixels).reshape(len(d), *self.shape)
