"""A user model (`--model tests/planted_model.py:build`) whose layer `units` is built from the
image itself, with known answers on dissect.probes.synthetic_broden images (tests/test_trust.py):

- unit 0: a detector of white pixels (the `house` objects), unit 1: of purple ones (`tree`);
- unit 2: co-occurrence: fires in the top-left corner only in images that contain a red `car`;
- units 3 .. 3+FIXED-1: fixed position: the same bump in every image, plus a little noise;
- the rest: hash noise, a fresh pseudo-random map per image (seeded by a hash of the image).
`build_small`: units 0 and 2 and the hash-noise units only (42 units).

Inputs are [0, 1] images (mean 0, std 1); the layer is 1/POOL of the image size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dissect.models.registry import LoadedModel

POOL = 2
FIXED = 20
NOISE = 40
UNITS = 3 + FIXED + NOISE


def _colour(x: torch.Tensor, rgb: tuple[int, int, int], tol: float = 0.12) -> torch.Tensor:
    ref = torch.tensor(rgb, dtype=x.dtype).view(1, 3, 1, 1) / 255
    return ((x - ref).abs() < tol).all(1).float()                     # B×H×W


def _image_noise(x: torch.Tensor, k: int, h: int, w: int) -> torch.Tensor:
    """k uniform maps per image, seeded by a hash of the image (independent of its content)."""
    out = []
    for img in x:
        q = (img * 255).round().to(torch.int64)
        seed = int((q.sum() * 7919 + q[0, ::3, ::5].sum() * 104729 + q[2, 1::4].sum()) % (2**31))
        out.append(torch.rand(k, h, w, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(out)


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.units = nn.Identity()
        self.head = nn.Linear(UNITS, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.maps(x)).mean((2, 3)))

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        b, _, H, W = x.shape
        h, w = H // POOL, W // POOL
        noise = _image_noise(x, UNITS, h, w)
        white = F.avg_pool2d(_colour(x, (240, 240, 240))[:, None], POOL)[:, 0]
        purple = F.avg_pool2d(_colour(x, (140, 30, 170))[:, None], POOL)[:, 0]
        car = (_colour(x, (220, 30, 30)).flatten(1).sum(1) > 4).float()      # B
        corner = torch.zeros(h, w)
        corner[: h // 4, : w // 4] = 1
        yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        g = torch.Generator().manual_seed(0)
        centres = torch.rand(FIXED, 2, generator=g) * torch.tensor([h - 1.0, w - 1.0])
        bumps = torch.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2)
                          / (2 * (h / 8) ** 2))                                 # FIXED×h×w
        maps = torch.cat([
            (white + 0.02 * noise[:, 0])[:, None],
            (purple + 0.02 * noise[:, 1])[:, None],
            (corner * car[:, None, None] * (0.5 + 0.5 * noise[:, 2]) + 0.01 * noise[:, 2])[:, None],
            bumps[None] + 0.2 * noise[:, 3:3 + FIXED],
            noise[:, 3 + FIXED:],
        ], 1)
        return maps


class PlantedSmall(Planted):
    """42 units: the white detector, the co-occurrence unit and the NOISE hash-noise units."""
    KEEP = [0, 2] + list(range(3 + FIXED, UNITS))

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(len(self.KEEP), 2)

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        return super().maps(x)[:, self.KEEP]


def build() -> LoadedModel:
    return LoadedModel(Planted().eval(), "planted", "none", ["a", "b"], (0.0, 0.0, 0.0),
                       (1.0, 1.0, 1.0))


def build_small() -> LoadedModel:
    """The 42-unit layer of the small-B significance test (tests/test_fidelity.py)."""
    return LoadedModel(PlantedSmall().eval(), "planted-small", "none", ["a", "b"],
                       (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
