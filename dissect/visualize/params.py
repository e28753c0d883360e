"""Image parameterisations: K images drawn from a spectrum, each a leaf tensor Adam moves.

    p = FourierImage(k=4, size=128, cfg=cfg, generator=g)   # Lucid: decorrelated-colour FFT
    p = MacoImage(k=4, size=128, cfg=cfg, generator=g)      # MaCo: phase only, fixed magnitude
    images01 = p()                                          # float K×3×S×S in (0, 1)
    p.parameters()                                          # what the optimiser moves

Both end in Lucid's colour recorrelation (`COLOR_SVD_SQRT`, normalised by its largest column
norm) and a sigmoid, so every pixel is a valid colour.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dissect.visualize.config import COLOR_SVD_SQRT, VisConfig


def _freqs(size: int) -> torch.Tensor:
    """|f| on the rfft2 grid of a size×size image (cycles per pixel), S×(S//2+1)."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def _color_matrix() -> torch.Tensor:
    m = np.asarray(COLOR_SVD_SQRT, dtype=np.float32)
    return torch.from_numpy(m / np.max(np.linalg.norm(m, axis=0)))


def recorrelate(t: torch.Tensor) -> torch.Tensor:
    """K×3×H×W decorrelated colour -> RGB logits (Lucid's `_linear_decorrelate_color`)."""
    m = _color_matrix().to(t.device)
    return torch.einsum("kchw,dc->kdhw", t, m)


class FourierImage(nn.Module):
    """Lucid's FFT image: a 1/f-scaled spectrum per colour channel, decorrelated colour."""

    def __init__(self, k: int, size: int, cfg: VisConfig, generator: torch.Generator,
                 device: str = "cpu"):
        super().__init__()
        self.size = size
        f = _freqs(size)
        scale = 1.0 / torch.clamp(f, min=1.0 / size) ** cfg.decay_power
        self.register_buffer("scale", scale[None, None].to(device))
        self.magic = cfg.magic
        init = torch.randn(k, 3, *f.shape, 2, generator=generator) * cfg.fft_sd
        self.spectrum = nn.Parameter(init.to(device))

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfftn(spec, s=(self.size, self.size), norm="ortho") / self.magic
        return torch.sigmoid(recorrelate(img))


def _standardise(t: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, t.dim()))
    t = t - t.mean(dims, keepdim=True)
    return t / (t.std(dims, keepdim=True) + 1e-4)


class MacoImage(nn.Module):
    """MaCo: the magnitude spectrum is fixed (1/f^decay), only the phase is optimised."""

    def __init__(self, k: int, size: int, cfg: VisConfig, generator: torch.Generator,
                 device: str = "cpu"):
        super().__init__()
        self.size = size
        f = _freqs(size)
        mag = 1.0 / torch.clamp(f, min=1.0 / size) ** cfg.maco_decay
        self.register_buffer("magnitude", mag[None, None].expand(1, 3, *f.shape).clone().to(device))
        self.phase = nn.Parameter(torch.randn(k, 3, *f.shape, generator=generator).to(device))

    def forward(self) -> torch.Tensor:
        phase = _standardise(self.phase)
        spec = torch.polar(self.magnitude.expand_as(phase), phase)
        img = _standardise(torch.fft.irfft2(spec, s=(self.size, self.size)))
        return torch.sigmoid(recorrelate(img))


def make_image(k: int, cfg: VisConfig, device: str = "cpu") -> nn.Module:
    """The parameterisation `cfg.method` names, seeded by `cfg.seed`."""
    g = torch.Generator().manual_seed(int(cfg.seed))
    cls = MacoImage if cfg.method == "maco" else FourierImage
    return cls(k, cfg.size, cfg, g, device)
