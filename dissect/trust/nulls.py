"""Null models for a layer's labels, computed from per-image statistics (dissect.trust.per_image).

    obs, null, iou_img = association_null(sp, concept_cat, "nd", B=1000, rng=rng)
    p = permutation_p(obs, null)                  # (1 + #{null ≥ observed}) / (B + 1)
    obs_l, null_l = localisation_null(sp, concept_cat, "nd", iou_img, B=1000, rng=rng)
    q = benjamini_hochberg(p)

Association null: an image permutation re-pairs each unit's activation masks with other images'
segmentations, keeping each unit's per-image active area and each concept's per-image pixels.
The statistic is the unit's best IoU over *all* concepts (the multiple comparison is inside the
test), with each pair's intersection taken at image level, Ĩ = Σ_i a_i·g_i(c)/(H·W): the
overlap expected if the active pixels were spread over the image. Observed and null values are
the same function of the pairing, so the test is exact for that statistic; one permutation is
one K×n by n×C matrix product.

Localisation null: each active image's map is rolled and flipped on the layer's grid (at most
GRID_MAX² cells, dissect.engine.tally), within its own image. Which images a unit fires in, and how much,
stay; where it fires is broken. The statistic is the unit's best grid-level IoU over its five
pixel-level concepts of highest image-level IoU (a choice the rolls cannot change, so the test
stays valid). Image-level labels (scenes) cover every cell, so no roll moves them: they are left
out, and a unit with no pixel-level concept in its images gets p_localised = 1.
"""
from __future__ import annotations

import numpy as np
import torch

from dissect.trust.per_image import Sparse, touched

CHUNK = 25          # permutations per matrix product
LOC_CANDIDATES = 5


def permutation_p(observed: np.ndarray, null: np.ndarray, rtol: float = 1e-5) -> np.ndarray:
    """(1 + #{null ≥ observed}) / (B + 1) per row; `null` is [K, B]. Units whose observed
    statistic is 0 (never active) get p = 1."""
    obs = np.asarray(observed, dtype=np.float64)[:, None]
    ge = (null >= obs - rtol * np.abs(obs)).sum(1)
    p = (1.0 + ge) / (null.shape[1] + 1.0)
    return np.where(obs[:, 0] > 0, p, 1.0)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values (step-up, monotone, capped at 1)."""
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def _iou(inter, act, truth):
    union = act + truth - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def association_null(sp: Sparse, concept_cat: np.ndarray, denominator: str, B: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observed [K], null [K, B], image-level IoU [K, C]) of the image-permutation null.

    The nd and NetDissect-Lite denominators use the active pixels of images whose *paired*
    segmentation has a label of the category (Lite's "touched" is image-level here)."""
    k, n, c = sp.units, sp.n, sp.concepts
    cc = torch.from_numpy(np.asarray(concept_cat, dtype=np.int64))
    U = torch.zeros(k, n, dtype=torch.float64)
    U.index_put_((torch.from_numpy(sp.pair_unit.astype(np.int64)),
                  torch.from_numpy(sp.pair_img.astype(np.int64))),
                 torch.from_numpy(sp.pair_act.astype(np.float64)), accumulate=True)
    S = torch.zeros(n, c, dtype=torch.float64)
    S.index_put_((torch.from_numpy(sp.ic_img.astype(np.int64)),
                  torch.from_numpy(sp.ic_col.astype(np.int64))),
                 torch.from_numpy(sp.ic_count.astype(np.float64)), accumulate=True)
    truth = S.sum(0)
    S = (S / sp.mask_pixels).float()
    U32 = U.float()
    present = torch.from_numpy(sp.present.astype(np.float32))
    fixed = denominator == "global"
    total = U.sum(1)

    def stat(perms: torch.Tensor) -> torch.Tensor:          # perms: [b, n] -> [b, K]
        inter = torch.matmul(U32, S[perms]).double()                        # b×K×C
        if fixed:
            act = total[None, :, None].expand_as(inter)
        else:
            act = torch.matmul(U32, present[perms]).double()[:, :, cc]      # b×K×C
        return _iou(inter, act, truth[None, None, :]).amax(2)

    ident = torch.arange(n)[None, :]
    inter0 = (U32 @ S).double()
    act0 = total[:, None].expand_as(inter0) if fixed else (U32 @ present).double()[:, cc]
    iou_img = _iou(inter0, act0, truth[None, :])
    observed = stat(ident)[0]
    null = torch.empty(k, B, dtype=torch.float64)
    for s in range(0, B, CHUNK):
        b = min(CHUNK, B - s)
        perms = torch.from_numpy(np.argsort(rng.random((b, n)), axis=1))
        null[:, s:s + b] = stat(perms).t()
    return observed.numpy(), null.numpy(), iou_img.numpy()


def _transforms(gh: int, gw: int) -> np.ndarray:
    """[T, gh·gw] cell permutations: every roll of the grid under 4 flips (identity first)."""
    idx = np.arange(gh * gw).reshape(gh, gw)
    out = []
    for base in (idx, idx[:, ::-1], idx[::-1, :], idx[::-1, ::-1]):
        for dy in range(gh):
            for dx in range(gw):
                out.append(np.roll(base, (dy, dx), axis=(0, 1)).reshape(-1))
    return np.stack(out)


def localisation_null(sp: Sparse, concept_cat: np.ndarray, denominator: str,
                      iou_img: np.ndarray, B: int, rng: np.random.Generator,
                      candidates: int = LOC_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """(observed [K], null [K, B]) of the roll/flip null within each image (needs cells)."""
    if not sp.cells:
        raise ValueError("the localisation null needs per-cell statistics (collect cells=True)")
    from scipy.sparse import csr_matrix
    k, n, c = sp.units, sp.n, sp.concepts
    gh, gw = sp.grid
    G = gh * gw
    cc = np.asarray(concept_cat, dtype=np.int64)
    perms = torch.from_numpy(_transforms(gh, gw))
    T = len(perms)
    P = len(sp.pair_img)
    # active fraction of each cell, per pair; concept pixels per cell, per (image, concept)
    frac = csr_matrix((sp.cell_count / sp.cell_size[sp.cell_idx], (sp.cell_pair, sp.cell_idx)),
                      shape=(P, G))
    conc = csr_matrix((sp.icc_count.astype(np.float64),
                       (sp.icc_img.astype(np.int64) * c + sp.icc_col, sp.icc_cell)),
                      shape=(n * c, G))
    truth = np.bincount(sp.ic_col, weights=sp.ic_count.astype(np.float64), minlength=c)
    if denominator == "global":
        act = np.bincount(sp.pair_unit, weights=sp.pair_act, minlength=k)[:, None] \
            .repeat(sp.present.shape[1], 1)
    else:
        mask = sp.present[sp.pair_img] if denominator == "nd" else touched(sp, cc)
        act = np.zeros((k, sp.present.shape[1]))
        np.add.at(act, sp.pair_unit, sp.pair_act[:, None] * mask)
    order = np.argsort(sp.pair_unit, kind="stable")
    bounds = np.searchsorted(sp.pair_unit[order], np.arange(k + 1))
    observed = np.zeros(k)             # 0 observed: permutation_p gives 1
    null = np.zeros((k, B))
    for u in range(k):
        rows = order[bounds[u]:bounds[u + 1]]
        if not len(rows):
            continue
        score = np.where(sp.image_level, -np.inf, iou_img[u])
        cand = np.argsort(-score, kind="stable")[:candidates]
        cand = cand[np.isfinite(score[cand])]
        if not len(cand):
            continue
        F = torch.from_numpy(frac[rows].toarray()).float()                  # R×G
        img = sp.pair_img[rows].astype(np.int64)
        Sx = conc[(img[:, None] * c + cand[None, :]).reshape(-1)].toarray()
        Sx = torch.from_numpy(Sx.reshape(len(rows), len(cand), G)).float()   # R×M×G
        Ft = F[:, perms]                                                     # R×T×G
        table = torch.bmm(Ft, Sx.transpose(1, 2)).double()                   # R×T×M
        a = torch.from_numpy(act[u, cc[cand]])
        g = torch.from_numpy(truth[cand])
        observed[u] = float(_iou(table[:, 0].sum(0), a, g).max())
        draws = torch.from_numpy(rng.integers(0, T, size=(B, len(rows))))
        pick = table[torch.arange(len(rows))[None, :], draws].sum(1)        # B×M
        null[u] = _iou(pick, a[None], g[None]).amax(1).numpy()
    return observed, null
