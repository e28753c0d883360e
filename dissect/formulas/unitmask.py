"""A unit's active pixels over the probe set, at the mask resolution, as a sparse list.

    img, pix = active_pixels(acts[:, k], thresholds[k], (H, W))

Active pixel (DESIGN.md): the raw map upsampled bilinearly (align_corners=False) to the mask
size is > T_k (strict), computed by the engine's own function (dissect.engine.tally.active_masks),
so these are exactly the pixels the engine counted. Only images whose raw max exceeds T_k can
hold one, so only those are upsampled. `acts` is the run's acts.npy (memory-mapped, the engine's
cache values) or any float array.
"""
from __future__ import annotations

import numpy as np
import torch

from dissect.engine.tally import active_masks


def active_pixels(acts: np.ndarray, threshold: float, size: tuple[int, int],
                  chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(image index int64 [m], flat pixel int64 [m]) of every active pixel, sorted."""
    a = np.asarray(acts)
    t = np.float32(threshold)
    cand = np.flatnonzero(a.reshape(len(a), -1).max(axis=1).astype(np.float32) > t)
    imgs, pixs = [], []
    for s in range(0, len(cand), chunk):
        idx = cand[s:s + chunk]
        raw = torch.from_numpy(np.ascontiguousarray(a[idx], dtype=np.float32))
        hot = (raw > t.item() if tuple(raw.shape[-2:]) == tuple(size)
               else active_masks(raw, float(t), size)).reshape(len(idx), -1).numpy()
        r, p = np.nonzero(hot)
        imgs.append(idx[r])
        pixs.append(p)
    if not imgs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(imgs).astype(np.int64), np.concatenate(pixs).astype(np.int64)
