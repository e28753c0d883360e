"""One batch of the tally phase: thresholded, upsampled unit maps against concept labels.

    labels = BatchLabels.from_batch(batch, lut, pixel_categories, scalar_categories)
    inc = tally_batch(acts, thresholds, labels, concept_cat, n_categories)
    tally.add(inc)                               # an IoUTally (dissect.stats)

Speed: a bilinear upsample never exceeds its raw map's max, so a (image, unit) pair whose raw
max is ≤ T_k has no active pixel, exactly. Only the other pairs are upsampled (one
`F.interpolate` per image), compared with T_k, and counted against the image's labels with one
matrix product: masks [pairs, pixels] @ one-hot labels [pixels, labels in this image].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BatchLabels:
    cols: torch.Tensor      # long B×P×H×W: concept column per plane pixel, -1 = none
    scalars: torch.Tensor   # long B×L: concept column of image-level labels, -1 = none

    @classmethod
    def from_batch(cls, batch, lut: torch.Tensor, mask_size: tuple[int, int]) -> "BatchLabels":
        """Map a ProbeBatch's concept ids to concept columns via `lut` (id -> column or -1)."""
        b = len(batch.index)
        h, w = mask_size
        planes = [batch.pixel[c] for c in sorted(batch.pixel)]
        ids = torch.cat(planes, 1).long() if planes else torch.zeros(b, 0, h, w, dtype=torch.long)
        scal = [batch.scalar[c] for c in sorted(batch.scalar)]
        sids = torch.cat(scal, 1).long() if scal else torch.zeros(b, 0, dtype=torch.long)
        return cls(_lookup(lut, ids), _lookup(lut, sids))


def _lookup(lut: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    ok = (ids > 0) & (ids < len(lut))
    out = torch.full_like(ids, -1)
    out[ok] = lut[ids[ok]]
    return out


def label_counts(labels: BatchLabels, n_concepts: int) -> dict[str, torch.Tensor]:
    """truth [C] (pixels per concept) and images [C] (images containing it), plus the B×C
    presence matrices of pixel labels and image-level labels."""
    cols, scal = labels.cols, labels.scalars
    b = cols.shape[0]
    hw = cols.shape[-1] * cols.shape[-2]
    v = cols[cols >= 0]
    truth = torch.bincount(v, minlength=n_concepts)
    sv = scal[scal >= 0]
    truth += torch.bincount(sv, minlength=n_concepts) * hw
    pix = torch.zeros(b, n_concepts + 1, dtype=torch.bool)
    pix.scatter_(1, (cols.reshape(b, -1) % (n_concepts + 1)), True)   # -1 -> column C (dropped)
    pix = pix[:, :n_concepts]
    img = torch.zeros(b, n_concepts + 1, dtype=torch.bool)
    if scal.shape[1]:
        img.scatter_(1, scal % (n_concepts + 1), True)
    img = img[:, :n_concepts]
    return {"truth": truth, "images": (pix | img).sum(0), "pix": pix, "img": img}


def tally_batch(acts: torch.Tensor, thresholds: torch.Tensor, labels: BatchLabels,
                concept_cat: torch.Tensor, n_categories: int) -> dict[str, torch.Tensor]:
    """IoU tally increments for one batch (see dissect.stats.IoUTally for the fields).

    acts: float B×K×h×w raw activations; thresholds: float K (T_k); labels: concept columns;
    concept_cat: long C, each concept's primary category index.
    """
    dev = acts.device
    b, k = acts.shape[:2]
    H, W = labels.cols.shape[-2:]
    n_concepts = len(concept_cat)
    lc = label_counts(labels, n_concepts)
    cat_onehot = torch.zeros(n_concepts, n_categories, device=dev)
    cat_onehot[torch.arange(n_concepts), concept_cat] = 1
    present = (lc["pix"] | lc["img"]).float().to(dev) @ cat_onehot > 0      # B×cats (nd)
    img_cat = lc["img"].float().to(dev) @ cat_onehot > 0                   # B×cats (lite)

    inter = torch.zeros(k, n_concepts, dtype=torch.float64, device=dev)
    act_img = torch.zeros(b, k, dtype=torch.float64, device=dev)
    act_lite = torch.zeros(k, n_categories, dtype=torch.float64, device=dev)
    thresholds = thresholds.to(dev, torch.float32)
    cols = labels.cols.to(dev)
    scal = labels.scalars.to(dev)
    imgmax = acts.amax(dim=(2, 3))
    cand = imgmax > thresholds[None, :]
    for i in torch.nonzero(cand.any(1)).flatten().tolist():
        units = torch.nonzero(cand[i]).flatten()
        up = F.interpolate(acts[i, units][:, None].float(), size=(H, W), mode="bilinear",
                           align_corners=False)[:, 0]
        mask = (up > thresholds[units][:, None, None]).reshape(len(units), H * W)
        a = mask.sum(1).double()
        act_img[i, units] = a
        touched = img_cat[i][None, :].expand(len(units), -1).clone()
        c = cols[i].reshape(-1, H * W)
        valid = c >= 0
        if bool(valid.any()):
            u, inv = torch.unique(c[valid], return_inverse=True)
            onehot = torch.zeros(H * W, len(u), device=dev)
            pixel_idx = torch.nonzero(valid)[:, 1]
            onehot.index_put_((pixel_idx, inv), torch.ones(len(inv), device=dev),
                              accumulate=True)
            hits = mask.float() @ onehot                                      # units × labels
            inter.index_put_((units[:, None].expand(-1, len(u)), u[None, :].expand(len(units), -1)),
                             hits.double(), accumulate=True)
            touched |= (hits @ cat_onehot[u]) > 0
        for s in scal[i][scal[i] >= 0].tolist():
            inter[units, s] += a
        act_lite[units] += a[:, None] * touched.double()
    act_nd = act_img.t() @ present.double()
    return {"inter": inter.round().long(), "truth": lc["truth"], "images": lc["images"],
            "act": act_img.sum(0).round().long(), "act_nd": act_nd.round().long(),
            "act_lite": act_lite.round().long()}
