"""A user model (`--model tests/vis_planted_model.py:build`) whose layer `units` has units with a
known preferred stimulus, for the feature-visualisation tests (tests/test_visualize.py):

- unit 0: redness, r − max(g, b) at each pixel (the preferred image is pure red);
- unit 1: a 1×16 filter across each row, two periods of 8 px (cos), rectified: it wants
  vertical stripes of period 8 px, i.e. energy at horizontal spatial frequency 1/8;
- unit 2: constant (1.0 everywhere, whatever the image): nothing to optimise;
- unit 3: dead (0 everywhere).
`early` is an earlier layer (a fixed 3×3 conv) for the path check; `pool` has no spatial output.
Inputs are [0, 1] images (mean 0, std 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dissect.models import LoadedModel

PERIOD, WIDTH = 8, 16


class Units(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        red = r - torch.maximum(g, b)
        grey = x.mean(1, keepdim=True)
        kernel = torch.cos(2 * math.pi * torch.arange(WIDTH, dtype=x.dtype) / PERIOD)
        stripes = F.relu(F.conv2d(grey, (kernel / WIDTH).view(1, 1, 1, WIDTH)))
        stripes = F.pad(stripes, (0, WIDTH - 1))             # same width as the others
        return torch.cat([red, stripes, torch.ones_like(red), torch.zeros_like(red)], 1)


class VisPlanted(nn.Module):
    def __init__(self):
        super().__init__()
        self.early = nn.Conv2d(3, 8, 3, padding=1)
        self.units = Units()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)
        torch.nn.init.normal_(self.early.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.early(x)                    # observed by the path check only
        return self.head(self.pool(self.units(x)).flatten(1))


def build() -> LoadedModel:
    return LoadedModel(VisPlanted().eval(), "vis_planted", "none", ["a", "b"], (0.0, 0.0, 0.0),
                       (1.0, 1.0, 1.0), input_size=64)
