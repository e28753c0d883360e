"""Image-bootstrap uncertainty of each unit's label (from dissect.trust.per_image per-image statistics).

    lo, hi, stability = bootstrap_label(sp, label_cols, concept_cat, "nd", resamples=1000, rng=rng)

Images are resampled with replacement (pixels within an image are not independent, images are);
each resample's IoU is a weighted re-aggregation of the per-image tallies, with each unit's
threshold held fixed (the fast approximation: the threshold is not re-estimated). `lo`/`hi` are
the 2.5 and 97.5 percentiles of the label's IoU; `stability` is the share of resamples whose best
concept, among the unit's CANDIDATES best concepts on all images, is still the label.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from dissect.trust.per_image import Sparse, touched

CANDIDATES = 10
CHUNK = 200


def _candidates(iou: np.ndarray, label_cols: np.ndarray, m: int) -> np.ndarray:
    """[K, m'] columns: the label first, then the unit's next best concepts."""
    k, c = iou.shape
    m = min(m, c)
    order = np.argsort(-iou, axis=1, kind="stable")
    out = np.empty((k, m), dtype=np.int64)
    for u in range(k):
        lab = label_cols[u] if label_cols[u] >= 0 else order[u, 0]
        rest = [j for j in order[u] if j != lab][: m - 1]
        out[u] = [lab] + rest
    return out


def bootstrap_label(sp: Sparse, iou: np.ndarray, label_cols: np.ndarray,
                    concept_cat: np.ndarray, denominator: str, resamples: int,
                    rng: np.random.Generator,
                    candidates: int = CANDIDATES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(iou_lo, iou_hi, label_stability), each float [K]; NaN stability for never-active units."""
    k, n, c = sp.units, sp.n, sp.concepts
    cc = np.asarray(concept_cat, dtype=np.int64)
    cats = sp.present.shape[1]
    cand = _candidates(iou, np.asarray(label_cols), candidates)
    m = cand.shape[1]
    slot = np.full((k, c), -1, dtype=np.int64)
    slot[np.arange(k)[:, None], cand] = np.arange(m)[None, :]
    unit = sp.pair_unit[sp.pc_pair].astype(np.int64)
    s = slot[unit, sp.pc_col]
    keep = s >= 0
    inter = csr_matrix((sp.pc_count[keep].astype(np.float64),
                        (sp.pair_img[sp.pc_pair[keep]], unit[keep] * m + s[keep])),
                       shape=(n, k * m))
    if denominator == "global":
        mask = np.ones((len(sp.pair_img), cats), dtype=bool)
    elif denominator == "nd":
        mask = sp.present[sp.pair_img]
    else:
        mask = touched(sp, cc)
    pi, ci = np.nonzero(mask)
    act = csr_matrix((sp.pair_act[pi].astype(np.float64),
                      (sp.pair_img[pi], sp.pair_unit[pi].astype(np.int64) * cats + ci)),
                     shape=(n, k * cats))
    truth = csr_matrix((sp.ic_count.astype(np.float64), (sp.ic_img, sp.ic_col)), shape=(n, c))
    cat_of = cc[cand]                                               # K×m
    label_iou = np.empty((resamples, k))
    same = np.zeros(k)
    for start in range(0, resamples, CHUNK):
        r = min(CHUNK, resamples - start)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64).T   # n×r
        I = np.asarray((inter.T @ W).T).reshape(r, k, m)
        A = np.asarray((act.T @ W).T).reshape(r, k, cats)
        G = np.asarray((truth.T @ W).T)                                         # r×C
        a = np.take_along_axis(A, np.broadcast_to(cat_of[None], (r, k, m)), axis=2)
        union = a + G[:, cand] - I
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.where(union > 0, I / np.where(union > 0, union, 1), 0.0)
        label_iou[start:start + r] = v[:, :, 0]
        same += ((np.argmax(v, axis=2) == 0) & (v[:, :, 0] > 0)).sum(0)
    lo, hi = np.percentile(label_iou, [2.5, 97.5], axis=0)
    stability = same / resamples
    dead = iou[np.arange(k), cand[:, 0]] <= 0
    stability[dead] = np.nan
    return lo, hi, stability
