"""One batch of the tally phase: thresholded, upsampled unit maps against concept labels.

    labels = BatchLabels.from_batch(batch, lut, mask_size)
    inc = tally_batch(acts, thresholds, labels, concept_cat, n_categories)
    tally.add(inc)                               # an IoUTally (dissect.engine.stats)

Speed without approximation:
1. A bilinear upsample never exceeds its raw map's max, so an (image, unit) pair whose raw max
   is ≤ T_k has no active pixel: only the other pairs are looked at.
2. Each output pixel of a bilinear upsample is a convex combination of (at most) 2×2 raw
   pixels. Output pixels sharing the same 2×2 support form a "cell" (about s×s pixels for an
   s× upsample); a cell can hold active pixels only if one of its support pixels is > T_k.
   Only those cells are evaluated, with the weights of `F.interpolate(mode="bilinear",
   align_corners=False)` read from F.interpolate itself (values agree to float32 rounding;
   pixels where a weight is 0 or 1, e.g. the clamped borders, are bit-identical).
3. Active pixels are counted against every label plane with one bincount.

`tally_batch(..., detail=True)` also returns the per-(image, unit) sparse statistics that the
trust statistics (dissect.trust.per_image) re-aggregate without touching pixels again: each candidate
pair's active pixels, its intersections per concept, and its active pixels per cell of a coarse
grid (`grid_shape`, at most GRID_MAX² cells, the layer's own grid when it is small enough).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


GRID_MAX = 8


def grid_shape(h: int, w: int) -> tuple[int, int]:
    """The coarse grid (rows, cols) that per-pair cell counts use for an h×w layer."""
    return min(h, GRID_MAX), min(w, GRID_MAX)


def pixel_cells(H: int, W: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid row of each of H mask rows, grid column of each of W mask columns (long)."""
    return (torch.arange(H) * grid[0] // H, torch.arange(W) * grid[1] // W)


@dataclass
class BatchLabels:
    cols: torch.Tensor      # int32 B×P×H×W: concept column per plane pixel, -1 = none
    scalars: torch.Tensor   # long B×L: concept column of image-level labels, -1 = none

    @classmethod
    def from_batch(cls, batch, lut: torch.Tensor, mask_size: tuple[int, int]) -> "BatchLabels":
        """Map a ProbeBatch's concept ids to concept columns via `lut` (id -> column or -1)."""
        b = len(batch.index)
        h, w = mask_size
        planes = [batch.pixel[c] for c in sorted(batch.pixel)]
        ids = torch.cat(planes, 1) if planes else torch.zeros(b, 0, h, w, dtype=torch.int32)
        scal = [batch.scalar[c] for c in sorted(batch.scalar)]
        sids = torch.cat(scal, 1) if scal else torch.zeros(b, 0, dtype=torch.int32)
        return cls(_lookup(lut, ids), _lookup(lut, sids).long())


def _lookup(lut: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """lut[id] for ids in range, -1 for id 0 and ids past the table (int32 out)."""
    ext = torch.cat([lut.to(torch.int32), torch.tensor([-1], dtype=torch.int32)])
    ext[0] = -1
    flat = ids.reshape(-1).clamp(min=0, max=len(lut)).long()
    return ext.index_select(0, flat).view(ids.shape)


# ----------------------------------------------------------------------------- geometry
@dataclass
class _Axis:
    i0: torch.Tensor     # long [blocks]: first support index of each block
    i1: torch.Tensor     # long [blocks]: second support index
    pos: torch.Tensor    # long [blocks, L]: output indices of the block (padded with 0)
    valid: torch.Tensor  # bool [blocks, L]
    l0: torch.Tensor     # float [blocks, L]: weight of i0 (NaN where padded)
    l1: torch.Tensor     # float [blocks, L]: weight of i1


@lru_cache(maxsize=32)
def _axis(n_in: int, n_out: int) -> _Axis:
    """Bilinear (align_corners=False) weights along one axis, read from F.interpolate itself,
    grouped into blocks of consecutive outputs with the same support."""
    eye = torch.eye(n_in).reshape(n_in, 1, 1, n_in)
    w = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=False)[:, 0, 0]
    w = w.numpy()                                          # [in, out]
    o = np.arange(n_out)
    i0 = np.argmax(w > 0, axis=0)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l0 = w[i0, o]
    l1 = np.where(i1 > i0, w[i1, o], 0).astype(np.float32)
    key = np.stack([i0, i1, l1 > 0], 1)
    starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(1)])
    ends = np.r_[starts[1:], n_out]
    length = int((ends - starts).max())
    nb = len(starts)
    pos = np.zeros((nb, length), np.int64)
    valid = np.zeros((nb, length), bool)
    L0 = np.full((nb, length), np.nan, np.float32)   # NaN padding: never "> T"
    L1 = np.full((nb, length), np.nan, np.float32)
    for b, (s, e) in enumerate(zip(starts, ends)):
        pos[b, : e - s] = o[s:e]
        valid[b, : e - s] = True
        L0[b, : e - s], L1[b, : e - s] = l0[s:e], l1[s:e]
    t = torch.from_numpy
    return _Axis(t(i0[starts]), t(i1[starts]), t(pos), t(valid), t(L0), t(L1))


# ----------------------------------------------------------------------------- counting
def label_counts(labels: BatchLabels, n_concepts: int) -> dict[str, torch.Tensor]:
    """truth [C] (pixels per concept), images [C] (images containing it), and the B×C presence
    of pixel labels (`pix`) and image-level labels (`img`)."""
    cols, scal = labels.cols, labels.scalars
    b = cols.shape[0]
    hw = cols.shape[-1] * cols.shape[-2]
    c1 = n_concepts + 1                     # column C collects "no concept" (-1)
    key = cols.reshape(b, -1).long() % c1 + torch.arange(b, device=cols.device)[:, None] * c1
    per_image = torch.bincount(key.reshape(-1), minlength=b * c1).view(b, c1)[:, :n_concepts]
    truth = per_image.sum(0)
    truth += torch.bincount(scal[scal >= 0], minlength=n_concepts) * hw
    pix = per_image > 0
    img = torch.zeros(b, c1, dtype=torch.bool, device=cols.device)
    if scal.shape[1]:
        img.scatter_(1, scal % c1, True)
    img = img[:, :n_concepts]
    return {"truth": truth, "images": (pix | img).sum(0), "pix": pix, "img": img,
            "per_image": per_image}


def tally_batch(acts: torch.Tensor, thresholds: torch.Tensor, labels: BatchLabels,
                concept_cat: torch.Tensor, n_categories: int,
                max_cells: int = 1 << 22, detail: bool = False) -> dict[str, torch.Tensor]:
    """IoU tally increments for one batch (see dissect.engine.stats.IoUTally for the fields).

    acts: float32 B×K×h×w raw activations; thresholds: float K (T_k); labels: concept columns;
    concept_cat: long C, each concept's primary category index. With `detail`, also the
    candidate pairs (`pair_image` [M] batch rows, `pair_unit` [M], `pair_active` [M]), their
    intersections `pair_concept` (long M×C, image-level labels included), their active pixels
    per grid cell `pair_cell` (long M×cells), the B×cats category presence `present` and each
    image's pixels per concept `image_concept` (long B×C, image-level labels cover H·W).
    """
    dev = acts.device
    b, k, h, w = acts.shape
    H, W = labels.cols.shape[-2:]
    n_planes = labels.cols.shape[1]
    C = len(concept_cat)
    cols = labels.cols.to(dev)
    scal = labels.scalars.to(dev)
    lc = label_counts(BatchLabels(cols, scal), C)
    cat_onehot = torch.zeros(C, n_categories, device=dev)
    cat_onehot[torch.arange(C, device=dev), concept_cat] = 1
    present = (lc["pix"] | lc["img"]).float() @ cat_onehot > 0          # B×cats (nd)
    img_cat = lc["img"].float() @ cat_onehot > 0                        # B×cats (lite)
    thresholds = thresholds.to(dev, torch.float32)

    # 1. candidate (image, unit) pairs
    bi, ki = torch.nonzero(acts.amax(dim=(2, 3)) > thresholds[None, :], as_tuple=True)
    m = len(bi)
    a_pair = torch.zeros(m, dtype=torch.float64, device=dev)
    inter = torch.zeros(k * C, dtype=torch.float64, device=dev)
    touched = torch.zeros(m * n_categories, dtype=torch.float64, device=dev)
    if m:
        raw = acts[bi, ki]                                              # M×h×w
        th = thresholds[ki]
        hot = raw > th[:, None, None]
        ry, rx = (_axis_to(_axis(h, H), dev), _axis_to(_axis(w, W), dev))
        # 2. candidate cells: a support pixel above T_k
        rowhot = hot[:, ry.i0] | hot[:, ry.i1]                            # M×RB×w
        cellhot = rowhot[:, :, rx.i0] | rowhot[:, :, rx.i1]               # M×RB×CB
        pm, pr, pc = torch.nonzero(cellhot, as_tuple=True)
        per = ry.pos.shape[1] * rx.pos.shape[1]
        step = max(1, max_cells // per)
        plane_stride = H * W
        flat_cols = cols.reshape(-1)
        offsets = torch.arange(n_planes, device=dev) * plane_stride
        c1, g1 = C + 1, n_categories + 1            # last column/category: "no concept"
        cat_ext = torch.cat([concept_cat, torch.tensor([n_categories], device=dev)])
        raw_flat = raw.reshape(-1)
        inter_ext = torch.zeros(k * c1, dtype=torch.float64, device=dev)
        touched_ext = torch.zeros(m * g1, dtype=torch.float64, device=dev)
        if detail:
            gh, gw = grid_shape(h, w)
            n_cells = gh * gw
            cy, cx = (t.to(dev) for t in pixel_cells(H, W, (gh, gw)))
            pc_ext = torch.zeros(m * c1, dtype=torch.int64, device=dev)
            cell_ext = torch.zeros(m * n_cells, dtype=torch.int64, device=dev)
        for s in range(0, len(pm), step):
            cm, cr, cc = pm[s:s + step], pr[s:s + step], pc[s:s + step]
            r0, r1 = ry.i0[cr] * w, ry.i1[cr] * w
            c0, c1_ = rx.i0[cc], rx.i1[cc]
            o = cm * (h * w)
            x00 = raw_flat.index_select(0, o + r0 + c0)[:, None]
            x01 = raw_flat.index_select(0, o + r0 + c1_)[:, None]
            x10 = raw_flat.index_select(0, o + r1 + c0)[:, None]
            x11 = raw_flat.index_select(0, o + r1 + c1_)[:, None]
            l0x, l1x = rx.l0.index_select(0, cc), rx.l1.index_select(0, cc)   # N×LC
            t0 = x00 * l0x + x01 * l1x
            t1 = x10 * l0x + x11 * l1x
            l0y = ry.l0.index_select(0, cr)[:, :, None]                       # N×LR×1
            l1y = ry.l1.index_select(0, cr)[:, :, None]
            v = t0[:, None, :] * l0y + t1[:, None, :] * l1y                   # N×LR×LC
            active = v > th.index_select(0, cm)[:, None, None]       # NaN padding: False
            n_i, yy, xx = torch.nonzero(active, as_tuple=True)
            if not len(n_i):
                continue
            pair = cm.index_select(0, n_i)
            a_pair += torch.bincount(pair, minlength=m).double()
            # flat index of the pixel in plane 0 of its image; blocks are contiguous runs
            base = bi.index_select(0, cm) * (n_planes * plane_stride) \
                + ry.pos[:, 0].index_select(0, cr) * W + rx.pos[:, 0].index_select(0, cc)
            flat = base.index_select(0, n_i) + yy * W + xx
            col = flat_cols.index_select(0, (flat[:, None] + offsets).reshape(-1)).long()
            col = torch.where(col < 0, C, col)
            kp = ki.index_select(0, pair)[:, None].expand(-1, n_planes).reshape(-1)
            inter_ext += torch.bincount(kp * c1 + col, minlength=k * c1).double()
            pp = pair[:, None].expand(-1, n_planes).reshape(-1)
            touched_ext += torch.bincount(pp * g1 + cat_ext.index_select(0, col),
                                          minlength=m * g1).double()
            if detail:
                pc_ext += torch.bincount(pp * c1 + col, minlength=m * c1)
                y = ry.pos[:, 0].index_select(0, cr).index_select(0, n_i) + yy
                x = rx.pos[:, 0].index_select(0, cc).index_select(0, n_i) + xx
                cell = cy.index_select(0, y) * gw + cx.index_select(0, x)
                cell_ext += torch.bincount(pair * n_cells + cell, minlength=m * n_cells)
        inter = inter_ext.view(k, c1)[:, :C].reshape(-1)
        touched = touched_ext.view(m, g1)[:, :n_categories].reshape(-1)
    inter = inter.reshape(k, C).clone()
    touched = touched.view(m, n_categories) > 0
    # image-level labels cover the whole image
    for j in range(scal.shape[1]):
        s = scal[bi, j]
        ok = s >= 0
        if bool(ok.any()):
            inter.index_put_((ki[ok], s[ok]), a_pair[ok], accumulate=True)
    touched |= img_cat[bi]
    act_img = torch.zeros(b, k, dtype=torch.float64, device=dev)
    act_img[bi, ki] = a_pair
    act_lite = torch.zeros(k, n_categories, dtype=torch.float64, device=dev)
    act_lite.index_add_(0, ki, a_pair[:, None] * touched.double())
    act_nd = act_img.t() @ present.double()
    out = {"inter": inter.round().long(), "truth": lc["truth"], "images": lc["images"],
           "act": act_img.sum(0).round().long(), "act_nd": act_nd.round().long(),
           "act_lite": act_lite.round().long()}
    if detail:
        gh, gw = grid_shape(h, w)
        if m:
            pc = pc_ext.view(m, C + 1)[:, :C].clone()
            cells = cell_ext.view(m, gh * gw)
        else:
            pc = torch.zeros(0, C, dtype=torch.int64, device=dev)
            cells = torch.zeros(0, gh * gw, dtype=torch.int64, device=dev)
        a_long = a_pair.round().long()
        for j in range(scal.shape[1]):       # image-level labels cover the whole image
            s = scal[bi, j]
            ok = s >= 0
            if bool(ok.any()):
                pc.index_put_((torch.nonzero(ok)[:, 0], s[ok]), a_long[ok], accumulate=True)
        per_image = lc["per_image"].clone()
        for j in range(scal.shape[1]):
            rows = torch.nonzero(scal[:, j] >= 0)[:, 0]
            per_image.index_put_((rows, scal[rows, j]), torch.full_like(rows, H * W),
                                 accumulate=True)
        out.update(pair_image=bi, pair_unit=ki, pair_active=a_long, pair_concept=pc,
                   pair_cell=cells, present=present, image_concept=per_image)
    return out


def _axis_to(a: _Axis, dev: torch.device) -> _Axis:
    if a.i0.device == dev:
        return a
    return _Axis(*(t.to(dev) for t in (a.i0, a.i1, a.pos, a.valid, a.l0, a.l1)))


@lru_cache(maxsize=32)
def _per_pixel(n_in: int, n_out: int) -> tuple[torch.Tensor, ...]:
    """(i0, i1, l0, l1) per output position: `_axis`'s blocks spread out, the same numbers."""
    a = _axis(n_in, n_out)
    i0, i1 = torch.zeros(n_out, dtype=torch.long), torch.zeros(n_out, dtype=torch.long)
    l0, l1 = torch.zeros(n_out), torch.zeros(n_out)
    for b in range(len(a.i0)):
        pos, ok = a.pos[b], a.valid[b]
        i0[pos[ok]], i1[pos[ok]] = a.i0[b], a.i1[b]
        l0[pos[ok]], l1[pos[ok]] = a.l0[b][ok], a.l1[b][ok]
    return i0, i1, l0, l1


def upsample_cells(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """M×h×w -> M×H×W bilinear (align_corners=False), with exactly `tally_batch`'s arithmetic.

    Every reader of a unit's active pixels (formulas, overlays, segmentations) thresholds this,
    so `upsample_cells(raw, size) > T_k` is bit for bit the engine's mask (`active_masks`).
    """
    raw = raw.float()
    (H, W), (h, w) = size, raw.shape[-2:]
    y0, y1, ly0, ly1 = (t.to(raw.device) for t in _per_pixel(h, H))
    x0, x1, lx0, lx1 = (t.to(raw.device) for t in _per_pixel(w, W))
    r0, r1 = raw.index_select(1, y0), raw.index_select(1, y1)               # M×H×w
    t0 = r0.index_select(2, x0) * lx0 + r0.index_select(2, x1) * lx1        # M×H×W
    t1 = r1.index_select(2, x0) * lx0 + r1.index_select(2, x1) * lx1
    return t0 * ly0[:, None] + t1 * ly1[:, None]


def active_masks(raw: torch.Tensor, thresholds: torch.Tensor | float,
                 size: tuple[int, int]) -> torch.Tensor:
    """Bool M×H×W: the engine's active pixels of M raw maps (`upsampled > T`, strict), with
    T a float or one threshold per map, compared in float32 as `tally_batch` compares."""
    th = torch.as_tensor(thresholds, dtype=torch.float32, device=raw.device).reshape(-1)
    return upsample_cells(raw, size) > th[:, None, None]
