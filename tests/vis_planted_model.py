"""A user model (`--model tests/vis_planted_model.py:build`) whose layer `units` has units with a
known preferred stimulus, for the feature-visualisation tests (tests/test_visualize.py):

- unit 0: redness, r − max(g, b) at each pixel (the preferred image is pure red);
- unit 1: a 1×16 filter across each row, two periods of 8 px (cos), rectified: it wants
  vertical stripes of period 8 px, i.e. energy at horizontal spatial frequency 1/8;
- unit 2: constant (1.0 everywhere, whatever the image): nothing to optimise;
- unit 3: dead (0 everywhere);
- unit 4: a "fooling circuit" (Geirhos et al. 2024): redness + 1000 × (unit 1's stripes)^4.
  Probe images hold red objects but no stripes (unit 1 stays ≤ 0.1 on them, so the second
  term ≤ 0.11), so its top natural images are red ones, yet its visualisation is stripes
  (measured 8.1 against red's ≤ 1): the path check must say so.
`early` is an earlier layer (fixed features: r, g, b, r−g, g−b, b−r and |∂grey/∂x|) for the
path check; `pool` has no spatial output.
Inputs are [0, 1] images (mean 0, std 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dissect.models.registry import LoadedModel

PERIOD, WIDTH = 8, 16


class Units(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        red = r - torch.maximum(g, b)
        grey = x.mean(1, keepdim=True)
        kernel = torch.cos(2 * math.pi * torch.arange(WIDTH, dtype=x.dtype) / PERIOD)
        stripes = F.relu(F.conv2d(grey, (kernel / WIDTH).view(1, 1, 1, WIDTH)))
        stripes = F.pad(stripes, (0, WIDTH - 1))             # same width as the others
        fooled = red + 1000 * stripes ** 4
        return torch.cat([red, stripes, torch.ones_like(red), torch.zeros_like(red), fooled], 1)


class Early(nn.Module):
    """Colour features and horizontal edge energy at each pixel (7 channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        grey = x.mean(1, keepdim=True)
        dx = F.pad((grey[..., 1:] - grey[..., :-1]).abs(), (0, 1))
        return torch.cat([r, g, b, r - g, g - b, b - r, dx], 1)


class VisPlanted(nn.Module):
    def __init__(self):
        super().__init__()
        self.early = Early()
        self.units = Units()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.early(x)                    # observed by the path check only
        return self.head(self.pool(self.units(x)).flatten(1))


def build() -> LoadedModel:
    return LoadedModel(VisPlanted().eval(), "vis_planted", "none", ["a", "b"], (0.0, 0.0, 0.0),
                       (1.0, 1.0, 1.0), input_size=64)
