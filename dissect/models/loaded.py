"""What a loaded model is: the network with its weights, preprocessing and class names.

    lm = load_model("resnet18", "none")             # dissect.models.registry builds these
    logits = lm.model(lm.normalize(images01))      # images01: float B×3×H×W in [0, 1]
    x = lm.prepare(pil_image)                      # a photo -> 3×S×S in [0, 1]

The leaf loaders (dissect.models.checkpoint, dissect.models.presets, dissect.toyworld.model) import this
module; the registry dissect.models.registry sits above them and imports them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torchvision
from torch import nn


def _imagenet_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    t = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    return tuple(t.mean), tuple(t.std)


# fallback for checkpoints that carry no preprocessing: taken from torchvision, not hand-copied
IMAGENET_MEAN, IMAGENET_STD = _imagenet_stats()


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
    resize_size: int | None = None           # short side before the centre crop (None: 256/224 rule)
    interpolation: str = "bilinear"          # "bilinear" or "bicubic"

    @property
    def random_init(self) -> bool:
        """True when the network has no trained weights (`--weights none`): a baseline only."""
        flag = self.meta.get("random_init")
        return bool(flag) if flag is not None else self.weights.lower() == "none"

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """Float B×3×H×W in [0, 1] -> the model's input (no resize, no crop)."""
        mean = torch.tensor(self.mean, device=images01.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images01.device).view(1, 3, 1, 1)
        return (images01 - mean) / std

    def prepare(self, image) -> torch.Tensor:
        """A PIL image -> float 3×S×S in [0, 1]: resize the short side, centre-crop `input_size`."""
        import torchvision.transforms.v2.functional as TF
        from torchvision.transforms import InterpolationMode
        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" \
            else InterpolationMode.BILINEAR
        resize = self.resize_size or round(self.input_size * 256 / 224)
        x = TF.to_dtype(TF.to_image(image.convert("RGB")), torch.float32, scale=True)
        x = TF.resize(x, [resize], interpolation=mode, antialias=True)
        return TF.center_crop(x, [self.input_size]).clamp(0, 1)
