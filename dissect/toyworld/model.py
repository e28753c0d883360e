"""The ToyWorld scene classifier: a small CNN whose last conv layer keeps a 14×14 map.

    lm = load_toyworld("default", "cpu")            # LoadedModel, class names = scene names
    logits = lm.model(lm.normalize(images01))        # images01: B×3×224×224 in [0, 1]

Architecture: the input is average-pooled to 112 inside the model, then 6 blocks of
3×3 conv + BN + ReLU (`conv1` … `conv6`; strides 2,2,1,2,1 and a dilated `conv6` in place
of a last stride, so conv5/conv6 are 14×14), global max pooling and a linear layer (`fc`).
Weights: dissect/toyworld/weights/toyworld_cnn.safetensors + toyworld_cnn.json (config,
normalisation, held-out accuracy).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dissect.toyworld.world import SCENE_NAMES

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "toyworld_cnn.safetensors"
CHANNELS = (24, 32, 48, 64, 96, 128)
STRIDES = (2, 2, 1, 2, 1, 1)
DILATIONS = (1, 1, 1, 1, 1, 2)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
POOL_TO = 112


def _block(cin: int, cout: int, stride: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ToyWorldCNN(nn.Module):
    """6 conv blocks on a 112 px input, global max pool, linear classifier."""

    def __init__(self, num_classes: int = len(SCENE_NAMES), channels=CHANNELS):
        super().__init__()
        cin = 3
        for i, (c, s, d) in enumerate(zip(channels, STRIDES, DILATIONS)):
            setattr(self, f"conv{i + 1}", _block(cin, c, s, d))
            cin = c
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != POOL_TO or x.shape[-2] != POOL_TO:
            x = F.adaptive_avg_pool2d(x, POOL_TO)
        for i in range(1, 7):
            x = getattr(self, f"conv{i}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_weights(model: nn.Module, path: Path, meta: dict) -> None:
    """Write safetensors weights and the sidecar JSON, each atomically."""
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    tmp.replace(path)
    side = sidecar_path(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(side)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (safetensors or weights-only torch); ModelError naming the
    file for anything else (a pickle, a truncated or binary file)."""
    from dissect.models.checkpoint import read_checkpoint
    return read_checkpoint(str(path))


def _check_edit(path: Path) -> None:
    """An edit folder's weights (EDIT/weights.safetensors) must match the hash its edit.json
    records (dissect.editing.files); ModelError naming both otherwise."""
    if path.name != "weights.safetensors" or not (path.parent / "edit.json").is_file():
        return
    from dissect.editing.files import read_edit
    from dissect.errors import ModelError
    try:
        read_edit(path.parent)
    except ValueError as e:
        raise ModelError(str(e)) from None


def load_weights(model, weights: str, default: Path, what: str, train: str
                 ) -> tuple[str, tuple, tuple, dict]:
    """Load "default"/"DEFAULT", "none" or a file into a ToyWorld `model` (in place); returns
    (label, mean, std, sidecar meta). ModelError names the file and the fix."""
    from dissect.errors import ModelError
    if weights.lower() == "none":
        return "none", MEAN, STD, {}
    path = default if weights.lower() == "default" else Path(weights)
    if not path.is_file():
        raise ModelError(f"{what} weights '{path}' not found: train them with "
                         f"`{train}` or pass --weights none")
    _check_edit(path)
    try:
        model.load_state_dict(load_state(path))
    except (RuntimeError, KeyError, ValueError) as e:
        raise ModelError(f"'{path}' is not a {what} checkpoint ({str(e)[:120]}); "
                         "use the default weights or retrain") from None
    meta: dict = {}
    side = sidecar_path(path)
    if side.is_file():
        from dissect.runs.safe import read_json
        meta = read_json(side, side.parent, error=ModelError, owner="the weights",
                         fix="delete it or save the weights again")
        meta = meta if isinstance(meta, dict) else {}
    label = "default" if path == default else str(path)
    return label, tuple(meta.get("mean", MEAN)), tuple(meta.get("std", STD)), meta


def load_toyworld(weights: str = "default", device: str = "cpu"):
    """The ToyWorld CNN as a LoadedModel: weights "default"/"DEFAULT", "none" or a file path."""
    from dissect.models.loaded import LoadedModel
    model = ToyWorldCNN()
    label, mean, std, meta = load_weights(model, weights, DEFAULT_WEIGHTS, "ToyWorld CNN",
                                          "python -m dissect toyworld train")
    model.eval().to(device)
    return LoadedModel(model, "toyworld", label, list(SCENE_NAMES), mean, std,
                       input_size=224, device=device, meta=meta)
