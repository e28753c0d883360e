"""Models: network + weights + preprocessing + class names, and the layer listing.

    lm = load_model("resnet18", weights="none", seed=0)
    logits = lm.model(lm.normalize(images01))      # images01: float B×3×H×W in [0, 1]
    lm.class_names[logits.argmax(1)[0]]
    for info in list_layers(lm): print(info.name, info.shape, info.spatial)

MINIMAL VERSION (lead's stub): torchvision names with weights none / ENUM only.
The models owner extends this: checkpoints (.pth/.pth.tar/.safetensors), file.py:factory,
--classes FILE, presets (toyworld, efficientnet_lite0), offline messages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torchvision
from torch import nn


class ModelError(ValueError):
    """A model or weights problem; the message names the thing and the fix."""


@dataclass
class LoadedModel:
    model: nn.Module                         # eval mode, on `device`
    name: str
    weights: str
    class_names: list[str]
    mean: tuple[float, float, float]         # normalisation from the weights' own transforms
    std: tuple[float, float, float]
    input_size: int = 224                    # size single photos are resized/cropped to
    device: str = "cpu"
    meta: dict = field(default_factory=dict)

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """Float B×3×H×W in [0, 1] -> the model's input (no resize, no crop)."""
        mean = torch.tensor(self.mean, device=images01.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images01.device).view(1, 3, 1, 1)
        return (images01 - mean) / std


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_model(name: str, weights: str = "none", *, classes: str | None = None,
               device: str = "cpu", seed: int = 0) -> LoadedModel:
    """Load `name` with `weights` ("none" = seeded random init, or a torchvision enum name)."""
    torch.manual_seed(seed)
    if weights.lower() == "none":
        model = torchvision.models.get_model(name, weights=None)
        n = _num_classes(model)
        class_names = [f"class {i}" for i in range(n)]
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        enum = torchvision.models.get_model_weights(name)[weights] if weights != "DEFAULT" \
            else torchvision.models.get_model_weights(name).DEFAULT
        model = torchvision.models.get_model(name, weights=enum)
        class_names = list(enum.meta.get("categories") or [])
        t = enum.transforms()
        mean, std = tuple(t.mean), tuple(t.std)
    model.eval().to(device)
    return LoadedModel(model, name, weights, class_names, mean, std, device=device)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 1000


@dataclass
class LayerInfo:
    name: str
    shape: tuple[int, ...]   # output shape without batch, e.g. (512, 7, 7)
    spatial: bool            # a K×h×w output: dissectable


def list_layers(lm: LoadedModel, size: int | None = None) -> list[LayerInfo]:
    """Every named module with its output shape, from one dummy forward pass."""
    from dissect.hooks import capture
    size = size or lm.input_size
    names = [n for n, _ in lm.model.named_modules() if n]
    with torch.no_grad(), capture(lm.model, names) as acts:
        lm.model(torch.zeros(1, 3, size, size, device=lm.device))
    return [
        LayerInfo(n, tuple(acts[n].shape[1:]), acts[n].dim() == 4)
        for n in names if n in acts
    ]
