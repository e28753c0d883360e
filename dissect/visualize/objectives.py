"""What each image is optimised for: a unit's mean over positions, or a direction's projection.

    t = Targets.units([0, 5, 6], channels=512)                  # Lucid's `channel`
    t = Targets.directions(decoder_rows, names=["f3", "f9"])    # projection on each row
    t = Targets.directions(rows, cosine=True)                   # Lucent's `direction` (cosine)
    with grab(model, "layer4") as out:
        model(x)                                                # out["act"] keeps the graph
    per_image = t.objective(out["act"])      # K values, image i scored on target i
    stat = t.statistic(out["act"])           # K values: max over positions (the imgmax.npy one)

Layers are read in their layout: B×C×h×w (channels first) or B×N×C (tokens: C units over N
positions). A direction's projection is on the unit vector (decoder rows are normalised).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dissect.models.hooks import StopForward, get_layer


def channels_last(act: torch.Tensor) -> torch.Tensor:
    """B×C×h×w or B×N×C -> B×P×C (P positions)."""
    if act.dim() == 4:
        return act.flatten(2).transpose(1, 2)
    if act.dim() == 3:
        return act
    raise ValueError(f"expected a B×C×h×w or B×N×C output, got shape {tuple(act.shape)}")


@contextmanager
def grab(model: nn.Module, layer: str, stop: bool = True) -> Iterator[dict]:
    """Keep `layer`'s output (with its graph) in the yielded dict under "act"; with `stop` the
    forward pass ends there (wrap the call in `run_to`)."""
    module = get_layer(model, layer)
    box: dict = {}

    def hook(_m, _i, output):
        box["act"] = output[0] if isinstance(output, (tuple, list)) else output
        if stop:
            raise StopForward()

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def run_to(model: nn.Module, x: torch.Tensor) -> None:
    """model(x), swallowing the early stop of `grab(..., stop=True)`."""
    try:
        model(x)
    except StopForward:
        pass


@dataclass
class Targets:
    """K targets: unit indices, or K direction vectors (rows of `vectors`)."""
    names: list[str]
    units: list[int] | None = None
    vectors: torch.Tensor | None = None     # float32 K×C, unit rows
    cosine: bool = False

    @classmethod
    def of_units(cls, units: list[int]) -> "Targets":
        return cls([str(u) for u in units], units=[int(u) for u in units])

    @classmethod
    def of_directions(cls, rows: torch.Tensor, names: list[str], cosine: bool = False) -> "Targets":
        rows = torch.as_tensor(rows, dtype=torch.float32)
        return cls(list(names), vectors=F.normalize(rows, dim=1), cosine=cosine)

    def __len__(self) -> int:
        return len(self.names)

    def repeat(self, n: int) -> "Targets":
        """The same targets n times over (image i + j·K scored on target i)."""
        return Targets(self.names * n, self.units * n if self.units is not None else None,
                       self.vectors.repeat(n, 1) if self.vectors is not None else None,
                       self.cosine)

    def pick(self, k: int, n: int) -> "Targets":
        """Target k alone, n times over (to score n images on it)."""
        return Targets([self.names[k]] * n,
                       [self.units[k]] * n if self.units is not None else None,
                       self.vectors[k:k + 1].repeat(n, 1) if self.vectors is not None else None,
                       self.cosine)

    def maps(self, act: torch.Tensor) -> torch.Tensor:
        """B×P: image i's value of target i at each position (positions in layout order)."""
        return self._per_position(act, False)

    def _per_position(self, act: torch.Tensor, cosine: bool) -> torch.Tensor:
        """B×P: image i's value of target i at each position."""
        x = channels_last(act).float()
        if self.units is not None:
            idx = torch.tensor(self.units, device=x.device)
            return x.gather(2, idx.view(-1, 1, 1).expand(-1, x.shape[1], 1))[..., 0]
        v = self.vectors.to(x.device)
        if cosine:
            return F.cosine_similarity(x, v[:, None, :], dim=2)
        return torch.einsum("bpc,bc->bp", x, v)

    def objective(self, act: torch.Tensor) -> torch.Tensor:
        """K values to raise: mean over positions (unit), projection or cosine (direction)."""
        return self._per_position(act, self.cosine).mean(1)

    def statistic(self, act: torch.Tensor) -> torch.Tensor:
        """K values: max over positions of the unit (or the projection), as imgmax.npy."""
        return self._per_position(act, False).amax(1)
