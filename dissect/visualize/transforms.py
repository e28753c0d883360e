"""Lucid's standard transforms, batched: each image of the batch gets its own random warp.

    warp = StandardTransforms(cfg, generator=g)
    seen = warp(images01)          # K×3×S×S -> K×3×(S+2·pad−sum(jitter))² , differentiable

pad `cfg.pad` with grey 0.5, then jitter, random scale, random rotation and jitter again,
folded into one affine sampling grid per image (bilinear), then optional input noise
(MaCo: Gaussian + uniform, as horama adds).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dissect.visualize.config import VisConfig


class StandardTransforms:
    """pad → jitter → scale → rotate → jitter (Lucid `standard_transforms`), one grid per image."""

    def __init__(self, cfg: VisConfig, generator: torch.Generator):
        self.cfg, self.g = cfg, generator

    def out_size(self, size: int) -> int:
        return size + 2 * self.cfg.pad - sum(self.cfg.jitter)

    def _choice(self, options, k: int) -> torch.Tensor:
        idx = torch.randint(len(options), (k,), generator=self.g)
        return torch.tensor(options, dtype=torch.float32)[idx]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cfg, k, size = self.cfg, x.shape[0], x.shape[-1]
        padded = F.pad(x, (cfg.pad,) * 4, value=0.5)
        p, o = padded.shape[-1], self.out_size(size)
        scale = self._choice(cfg.scales, k)
        angle = self._choice(cfg.angles, k) * math.pi / 180
        # the two jitters are random crops; their offsets from the centred crop add up
        shift = sum((torch.rand(k, 2, generator=self.g) - 0.5) * j for j in cfg.jitter)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.zeros(k, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        theta[:, :, :2] *= o / p                     # output covers o of the p padded pixels
        theta[:, :, 2] = shift * 2 / p
        grid = F.affine_grid(theta.to(x.device), [k, 3, o, o], align_corners=False)
        out = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        if cfg.noise:
            gen = torch.Generator(device="cpu").manual_seed(int(torch.randint(2**31, (1,),
                                                                          generator=self.g)))
            noise = torch.randn(out.shape, generator=gen) * cfg.noise \
                + (torch.rand(out.shape, generator=gen) - 0.5) * cfg.noise
            out = out + noise.to(out.device)
        return out
