"""Per-image sparse statistics of a layer, and the label checks they make cheap.

    stats = PerImageStats(n_images, units, concepts, categories, grid, mask_size, cells=True)
    for each tally batch: stats.add(tally_batch(..., detail=True), labels, batch.index)
    sp = stats.finish()                                  # a Sparse (numpy arrays)
    iou = subset_iou(sp, weights, concept_cat, "nd")     # IoU on any weighting of the images
    heldout = heldout_iou(sp, choose, measure, concept_cat, "nd")

The engine's tally counts, for every (image, unit) pair whose raw map exceeds the unit's
threshold, its active pixels, its intersection with every concept and its active pixels per cell
of a coarse grid (dissect.engine.tally). Kept per image, they turn every check that re-weights images
(held-out halves, the image bootstrap, image permutations) into a re-aggregation that never
touches a pixel again. `trust_columns` (dissect.trust.columns) turns them into units.csv columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dissect.engine.stats import IoUTally
from dissect.engine.tally import BatchLabels, grid_shape, pixel_cells

_PAIR = ("pair_img", "pair_unit", "pair_act")
_PC = ("pc_pair", "pc_col", "pc_count")
_CELL = ("cell_pair", "cell_idx", "cell_count")
_IC = ("ic_img", "ic_col", "ic_count")
_ICC = ("icc_img", "icc_cell", "icc_col", "icc_count")


@dataclass
class Sparse:
    """One layer's per-image statistics (numpy; P candidate pairs, n images, C concepts)."""
    n: int
    units: int
    concepts: int
    grid: tuple[int, int]
    mask_pixels: int
    cell_size: np.ndarray      # float [cells]: mask pixels per grid cell
    pair_img: np.ndarray       # int [P]
    pair_unit: np.ndarray      # int [P]
    pair_act: np.ndarray       # int [P]: active pixels of the pair
    pc_pair: np.ndarray        # sparse [P, C] intersections: pair, concept column, pixels
    pc_col: np.ndarray
    pc_count: np.ndarray
    present: np.ndarray        # bool [n, cats]: image has a label of the category
    ic_img: np.ndarray         # sparse [n, C] concept pixels per image
    ic_col: np.ndarray
    ic_count: np.ndarray
    image_level: np.ndarray    # bool [C]: the concept is an image-level label (covers images)
    cell_pair: np.ndarray | None = None   # sparse [P, cells] active pixels per grid cell
    cell_idx: np.ndarray | None = None
    cell_count: np.ndarray | None = None
    icc_img: np.ndarray | None = None     # sparse [n, cells, C] concept pixels per grid cell
    icc_cell: np.ndarray | None = None
    icc_col: np.ndarray | None = None
    icc_count: np.ndarray | None = None

    @property
    def cells(self) -> bool:
        return self.cell_pair is not None


class PerImageStats:
    """Collects one layer's per-image sparse statistics batch by batch (checkpointable)."""

    def __init__(self, n_images: int, units: int, concepts: int, categories: int,
                 grid: tuple[int, int], mask_size: tuple[int, int], cells: bool = False):
        self.n, self.units, self.concepts, self.categories = n_images, units, concepts, categories
        self.grid, self.mask_size, self.cells = tuple(grid), tuple(mask_size), cells
        self.pairs = 0
        self.present = torch.zeros(n_images, categories, dtype=torch.bool)
        self.image_level = torch.zeros(concepts, dtype=torch.bool)
        names = _PAIR + _PC + _IC + ((_CELL + _ICC) if cells else ())
        self.parts: dict[str, list[torch.Tensor]] = {k: [] for k in names}
        cy, cx = pixel_cells(*self.mask_size, self.grid)
        self._cell_of_pixel = (cy[:, None] * self.grid[1] + cx[None, :]).reshape(-1)

    @classmethod
    def for_layer(cls, cfg, probe, shape: tuple[int, int, int], concepts: int,
                  categories: int) -> "PerImageStats":
        """Empty statistics for a layer of output `shape` (K, h, w) on `probe` (cells with --null)."""
        return cls(len(probe), shape[0], concepts, categories, grid_shape(*shape[1:]),
                   probe.mask_size, cells=int(getattr(cfg, "null", 0) or 0) > 0)

    def merge(self, other: "PerImageStats") -> None:
        """Add another shard's statistics (disjoint images, global image indices)."""
        st = other.state_dict()
        for key in self.parts:
            v = st[key]
            if key in ("pc_pair", "cell_pair"):
                v = v + self.pairs
            self.parts[key].append(v)
        self.present |= st["present"]
        self.image_level |= st["image_level"]
        self.pairs += int(st["pairs"])

    def add(self, inc: dict, labels: BatchLabels, index: torch.Tensor) -> None:
        """Add one batch: `inc` from tally_batch(detail=True), its labels, global image indices."""
        index = index.cpu().long()
        put = lambda key, v: self.parts[key].append(v.cpu())  # noqa: E731
        bi = inc["pair_image"].cpu()
        m = len(bi)
        put("pair_img", index[bi].int())
        put("pair_unit", inc["pair_unit"].int())
        put("pair_act", inc["pair_active"])
        p, c = torch.nonzero(inc["pair_concept"], as_tuple=True)
        put("pc_pair", p + self.pairs)
        put("pc_col", c.int())
        put("pc_count", inc["pair_concept"][p, c])
        self.present[index] = inc["present"].cpu()
        scal = labels.scalars.cpu()
        self.image_level[scal[scal >= 0]] = True
        ii, c = torch.nonzero(inc["image_concept"], as_tuple=True)
        put("ic_img", index[ii.cpu()].int())
        put("ic_col", c.int())
        put("ic_count", inc["image_concept"][ii, c])
        if self.cells:
            p, g = torch.nonzero(inc["pair_cell"], as_tuple=True)
            put("cell_pair", p + self.pairs)
            put("cell_idx", g.short())
            put("cell_count", inc["pair_cell"][p, g].int())
            self._add_concept_cells(labels, index)
        self.pairs += m

    def _add_concept_cells(self, labels: BatchLabels, index: torch.Tensor) -> None:
        cols = labels.cols.cpu()
        b, planes = cols.shape[:2]
        n_cells = self.grid[0] * self.grid[1]
        c1 = self.concepts + 1
        cell = self._cell_of_pixel
        key = (torch.arange(b)[:, None, None] * n_cells + cell[None, None, :]) * c1 \
            + (cols.reshape(b, planes, -1).long() % c1)
        keys, counts = torch.unique(key.reshape(-1), return_counts=True)
        col = keys % c1
        keep = col < self.concepts
        keys, counts, col = keys[keep], counts[keep], col[keep]
        img, g = (keys // c1) // n_cells, (keys // c1) % n_cells
        scal = labels.scalars.cpu()
        if scal.shape[1]:                          # image-level labels cover every cell
            size = torch.bincount(cell, minlength=n_cells)
            r, j = torch.nonzero(scal >= 0, as_tuple=True)
            s = scal[r, j]
            img = torch.cat([img, r.repeat_interleave(n_cells)])
            g = torch.cat([g, torch.arange(n_cells).repeat(len(r))])
            col = torch.cat([col, s.repeat_interleave(n_cells)])
            counts = torch.cat([counts, size.repeat(len(r))])
        self.parts["icc_img"].append(index[img].int())
        self.parts["icc_cell"].append(g.short())
        self.parts["icc_col"].append(col.int())
        self.parts["icc_count"].append(counts.int())

    # ------------------------------------------------------------------ save / resume
    def state_dict(self) -> dict:
        cat = {k: (torch.cat(v) if v else torch.zeros(0, dtype=torch.int64))
               for k, v in self.parts.items()}
        self.parts = {k: [v] for k, v in cat.items()}
        return {"pairs": self.pairs, "present": self.present.clone(),
                "image_level": self.image_level.clone(), **cat}

    def load_state_dict(self, state: dict) -> None:
        self.pairs = int(state["pairs"])
        self.present = state["present"].clone()
        self.image_level = state["image_level"].clone()
        self.parts = {k: [state[k]] for k in self.parts}

    def finish(self) -> Sparse:
        """The collected statistics as numpy arrays."""
        st = self.state_dict()
        arr = {k: st[k].numpy() for k in self.parts}
        n_cells = self.grid[0] * self.grid[1]
        size = np.bincount(self._cell_of_pixel.numpy(), minlength=n_cells).astype(np.float64)
        return Sparse(n=self.n, units=self.units, concepts=self.concepts, grid=self.grid,
                      mask_pixels=int(self.mask_size[0] * self.mask_size[1]), cell_size=size,
                      present=self.present.numpy(), image_level=self.image_level.numpy(),
                      **arr)


# ---------------------------------------------------------------------- re-aggregation
def subset_tally(sp: Sparse, weights: np.ndarray, concept_cat: np.ndarray) -> IoUTally:
    """The IoU tally of the images weighted by `weights` (0/1 for a subset, counts for a
    bootstrap resample); weights of 1 reproduce the engine's tally exactly."""
    w = np.asarray(weights, dtype=np.float64)
    cc = np.asarray(concept_cat, dtype=np.int64)
    k, c = sp.units, sp.concepts
    cats = sp.present.shape[1]
    wp = w[sp.pair_img]
    a = wp * sp.pair_act
    wpc = wp[sp.pc_pair] * sp.pc_count
    inter = np.bincount(sp.pair_unit[sp.pc_pair].astype(np.int64) * c + sp.pc_col,
                        weights=wpc, minlength=k * c).reshape(k, c)
    truth = np.bincount(sp.ic_col, weights=w[sp.ic_img] * sp.ic_count, minlength=c)
    act = np.bincount(sp.pair_unit, weights=a, minlength=k)
    act_nd = np.zeros((k, cats))
    np.add.at(act_nd, sp.pair_unit, a[:, None] * sp.present[sp.pair_img])
    act_lite = np.zeros((k, cats))
    np.add.at(act_lite, sp.pair_unit, a[:, None] * touched(sp, cc))
    images = np.bincount(sp.ic_col, weights=w[sp.ic_img], minlength=c)
    t = IoUTally(k, c, cats)
    for name, v in (("inter", inter), ("truth", truth), ("act", act), ("act_nd", act_nd),
                    ("act_lite", act_lite), ("images", images)):
        setattr(t, name, torch.from_numpy(np.rint(v).astype(np.int64)))
    return t


def touched(sp: Sparse, concept_cat: np.ndarray) -> np.ndarray:
    """bool [P, cats]: the pair's active pixels touch a label of the category (NetDissect-Lite)."""
    out = np.zeros((len(sp.pair_img), sp.present.shape[1]), dtype=bool)
    out[sp.pc_pair, np.asarray(concept_cat)[sp.pc_col]] = True
    return out


def subset_iou(sp: Sparse, weights: np.ndarray, concept_cat: np.ndarray,
               denominator: str) -> np.ndarray:
    """float64 [K, C] IoU of the images weighted by `weights`."""
    return subset_tally(sp, weights, concept_cat).iou(concept_cat, denominator)


def best_columns(iou: np.ndarray, concept_cat: np.ndarray, n_categories: int) -> np.ndarray:
    """Each unit's label column by the engine's rule: best concept per category (first max),
    then the best category (first max); -1 where no category has a concept."""
    k = iou.shape[0]
    cc = np.asarray(concept_cat)
    score = np.full((n_categories, k), -np.inf)
    best = np.full((n_categories, k), -1, dtype=np.int64)
    for ci in range(n_categories):
        sel = np.flatnonzero(cc == ci)
        if len(sel):
            j = sel[np.argmax(iou[:, sel], axis=1)]
            best[ci], score[ci] = j, iou[np.arange(k), j]
    return best[np.argmax(score, axis=0), np.arange(k)]


def heldout_iou(sp: Sparse, choose: np.ndarray, measure: np.ndarray, concept_cat: np.ndarray,
                denominator: str) -> np.ndarray:
    """float [K]: the IoU, on the `measure` images, of the label chosen on the `choose` images."""
    cc = np.asarray(concept_cat)
    n_cats = sp.present.shape[1]
    j = best_columns(subset_iou(sp, choose, cc, denominator), cc, n_cats)
    iou_b = subset_iou(sp, measure, cc, denominator)
    out = np.zeros(sp.units)
    ok = j >= 0
    out[ok] = iou_b[np.flatnonzero(ok), j[ok]]
    return out
