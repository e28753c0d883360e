"""Image permutations for an association null: re-pair each image's activation masks with
another image's segmentation, within groups (e.g. the two held-out halves).

    perms = image_permutations(n_images, 5, seed=0, groups=[choose, measure])
    img_null = perms[b][img]        # the unit's active pixels of image i now sit on image perms[b][i]
    p = permutation_p_value(observed, null_values)

Local to formulas for now; the trust issue (i12, dissect/trust*) builds the label null. Both
keep each unit's per-image activation pattern and each image's labels, and break only which
goes with which.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def image_permutations(n: int, b: int, seed: int = 0,
                       groups: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """`b` seeded permutations of range(n) (int64), each mapping an image to one of its group."""
    rng = np.random.default_rng(seed)
    groups = [np.ones(n, bool)] if groups is None else list(groups)
    out = []
    for _ in range(b):
        perm = np.arange(n)
        for g in groups:
            idx = np.flatnonzero(g)
            perm[idx] = idx[rng.permutation(len(idx))]
        out.append(perm)
    return out


def permutation_p_value(observed: float, null: Sequence[float]) -> float:
    """(1 + #null ≥ observed) / (1 + #null): never 0, valid for a few permutations."""
    null = np.asarray(null, float)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))
