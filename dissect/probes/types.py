"""The probe-set types every source shares: items, batches, the ProbeSet table contract.

    class MyProbe(ProbeSet): ...                   # fill the tables, implement __getitem__
    loader = probe_loader(probe, batch_size=32)    # yields ProbeBatch

Sources (dissect.probes.broden, dissect.toyworld, segmenters.folder) import this module; the registry
dissect.probes.registry (open_probe) sits above them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class ProbeItem:
    index: int                                   # row of the probe's `images` table
    image: torch.Tensor                          # float32 3×H×W in [0, 1]
    pixel: dict[str, np.ndarray] = field(default_factory=dict)   # cat -> int32 P×h×w
    scalar: dict[str, np.ndarray] = field(default_factory=dict)  # cat -> int32 [L]


@dataclass
class ProbeBatch:
    index: torch.Tensor                          # int64 B
    images: torch.Tensor                         # float32 B×3×H×W in [0, 1]
    pixel: dict[str, torch.Tensor]               # cat -> int32 B×P×h×w (P = max planes, 0-padded)
    scalar: dict[str, torch.Tensor]              # cat -> int32 B×L (0-padded)


class ProbeSet(Dataset):
    """A labelled image set. Subclasses fill the tables below and implement `__getitem__`.

    - `categories`: category names in a fixed order;
    - `concepts`: DataFrame with columns concept (int id ≥ 1), name, category (its primary one);
    - `images`: DataFrame with columns index, path, split (row i is item i);
    - `mask_size`: (h, w) of every pixel-label plane;
    - `pixel_categories` / `scalar_categories`: which categories are pixel-level / image-level;
    - `decode_images` / `decode_labels`: set one False (on a copy) to skip that half of
      `__getitem__`; the engine reads only images in its forward phase and only labels in its
      tally phase.
    """

    categories: list[str]
    pixel_categories: list[str]
    scalar_categories: list[str]
    concepts: pd.DataFrame
    images: pd.DataFrame
    mask_size: tuple[int, int]
    description: str = ""
    skipped: int = 0   # unreadable images left out (folder probes count them)
    decode_images: bool = True
    decode_labels: bool = True

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> ProbeItem:  # pragma: no cover - abstract
        raise NotImplementedError


def collate(items: list[ProbeItem]) -> ProbeBatch:
    """Stack items into a batch, padding planes and image-level lists with 0 (unlabelled)."""
    pixel: dict[str, torch.Tensor] = {}
    scalar: dict[str, torch.Tensor] = {}
    for cat in {c for it in items for c in it.pixel}:
        planes = [it.pixel.get(cat) for it in items]
        h, w = next(p.shape[-2:] for p in planes if p is not None)
        depth = max((p.shape[0] for p in planes if p is not None), default=1)
        out = np.zeros((len(items), depth, h, w), dtype=np.int32)
        for b, p in enumerate(planes):
            if p is not None:
                out[b, : p.shape[0]] = p
        pixel[cat] = torch.from_numpy(out)
    for cat in {c for it in items for c in it.scalar}:
        lists = [it.scalar.get(cat, np.zeros(0, np.int32)) for it in items]
        out = np.zeros((len(items), max(1, max(len(v) for v in lists))), dtype=np.int32)
        for b, v in enumerate(lists):
            out[b, : len(v)] = v
        scalar[cat] = torch.from_numpy(out)
    return ProbeBatch(
        index=torch.tensor([it.index for it in items], dtype=torch.int64),
        images=torch.stack([it.image for it in items]),
        pixel=pixel,
        scalar=scalar,
    )


def probe_loader(probe: ProbeSet, batch_size: int = 32, workers: int = 1) -> DataLoader:
    """A DataLoader in probe order (no shuffle) whose workers decode while the model runs."""
    return DataLoader(
        probe, batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=collate, persistent_workers=False, prefetch_factor=4 if workers else None,
    )
