"""The planted model of tests/planted_model.py with its layer `units` given in three layouts
(`--model tests/planted_layouts.py:build_tokens`), for tests/test_layout.py:

- build_nchw: B × C × h × w, as planted;
- build_tokens: B × (1 + h·w) × C, a class token (every channel 7.0) first, then the grid
  row-major, as a vision transformer gives it;
- build_nhwc: B × h × w × C, channels-last; the model says so (`output_fmt = "NHWC"`), as timm's
  Swin does.
The same units and values in every layout: dissection must give the same tables.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from dissect.models.registry import LoadedModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planted_model import Planted  # noqa: E402

CLASS_TOKEN = 7.0


class _Tokens(nn.Module):
    def forward(self, m: torch.Tensor) -> torch.Tensor:
        b, c = m.shape[:2]
        cls = torch.full((b, 1, c), CLASS_TOKEN, dtype=m.dtype)
        return torch.cat([cls, m.flatten(2).transpose(1, 2)], 1)


class _Nhwc(nn.Module):
    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return m.permute(0, 2, 3, 1).contiguous()


class Laid(nn.Module):
    """Planted maps -> `units` in a layout -> a linear head on the mean over positions."""

    def __init__(self, kind: str):
        super().__init__()
        self.planted = Planted()
        self.kind = kind
        self.units = {"nchw": nn.Identity(), "tokens": _Tokens(), "nhwc": _Nhwc()}[kind]
        self.head = self.planted.head
        if kind == "nhwc":
            self.output_fmt = "NHWC"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured = {}
        h = self.planted.units.register_forward_hook(lambda _m, _i, o: captured.update(m=o))
        try:
            self.planted(x)
        finally:
            h.remove()
        out = self.units(captured["m"])
        pooled = {"nchw": lambda t: t.mean((2, 3)), "tokens": lambda t: t[:, 1:].mean(1),
                  "nhwc": lambda t: t.mean((1, 2))}[self.kind](out)
        return self.head(pooled)


def _lm(kind: str) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(Laid(kind).eval(), f"planted-{kind}", "none", ["a", "b"],
                       (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def build_nchw() -> LoadedModel:
    return _lm("nchw")


def build_tokens() -> LoadedModel:
    return _lm("tokens")


def build_nhwc() -> LoadedModel:
    return _lm("nhwc")
