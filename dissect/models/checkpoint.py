"""Local checkpoints: read a state dict from .pth / .pth.tar / .safetensors and fit it to a model.

    sd = read_state_dict("resnet18_places365.pth.tar")     # unwraps "state_dict", strips "module."
    n = classifier_classes(sd, "fc")                         # 365, from fc.weight
    fit_state_dict(model, sd, "resnet18_places365.pth.tar")  # strict; ModelError names bad keys

This is how the CSAIL Places365 release (`{"epoch", "arch", "state_dict": {"module.conv1..."}}`)
loads, as well as plain `torch.save(model.state_dict())` files and safetensors.
"""
from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from dissect.errors import ModelError

CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")


def is_checkpoint_path(weights: str) -> bool:
    """True when `weights` names a local file (by suffix or because it exists)."""
    return weights.lower().endswith(CHECKPOINT_SUFFIXES) or os.path.sep in weights \
        or os.path.isfile(weights)


def read_checkpoint(path: str) -> dict[str, Any]:
    """The raw object of a checkpoint file as a dict (safetensors or torch, weights only)."""
    if not os.path.isfile(path):
        raise ModelError(f"weights file '{path}' does not exist; pass an existing .pth, "
                         ".pth.tar or .safetensors file, an enum name such as IMAGENET1K_V1, or none")
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return dict(load_file(path, device="cpu"))
        except Exception as e:  # safetensors raises its own error types
            raise ModelError(f"weights file '{path}' is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"weights file '{path}' could not be read as a weights-only torch checkpoint "
            f"({str(e).splitlines()[0][:200]}); save it with torch.save(model.state_dict())"
        ) from None
    if isinstance(obj, nn.Module):  # pragma: no cover - weights_only forbids this
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ModelError(f"weights file '{path}' holds a {type(obj).__name__}, not a state dict")
    return obj


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: `state_dict` / `model` unwrapped, `module.` prefixes stripped,
    old DenseNet names ("denselayer1.norm.1.weight", as in the Places365 release) modernised."""
    obj = read_checkpoint(path)
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ModelError(f"weights file '{path}' holds no tensors (keys: {list(obj)[:8]})")
    return {_modern(_strip(k)): v for k, v in sd.items()}


_OLD_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _modern(key: str) -> str:
    m = _OLD_DENSENET.match(key)
    return m.group(1) + m.group(2) if m else key


def checkpoint_classes(path: str) -> list[str] | None:
    """Class names stored next to the weights (`classes` / `class_names` keys), if any."""
    if path.lower().endswith(".safetensors"):
        return None
    obj = read_checkpoint(path)
    for key in ("class_names", "classes", "categories"):
        names = obj.get(key)
        if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def _strip(key: str) -> str:
    for prefix in ("module.", "_orig_mod.", "model."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def classifier_name(model: nn.Module) -> str | None:
    """The last Linear (or 1×1 Conv2d, as squeezenet has) module: the classifier."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or (
            isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and "classifier" in name
        ):
            last = name
    return last


def classifier_classes(sd: dict[str, torch.Tensor], classifier: str | None) -> int | None:
    """The class count a checkpoint's classifier weight implies (its first dimension)."""
    if classifier is None:
        return None
    w = sd.get(f"{classifier}.weight")
    return int(w.shape[0]) if w is not None else None


def fit_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load `sd` strictly into `model`, or raise ModelError naming the keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shaped = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    # num_batches_tracked is bookkeeping: old checkpoints (Places365, 2017) lack it
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
            if keys:
                more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
                parts.append(f"{label} {len(keys)}: {', '.join(keys[:4])}{more}")
        raise ModelError(
            f"weights '{source}' do not fit {type(model).__name__}: {'; '.join(parts)}. "
            "Pick the --model the checkpoint was trained with (or its own file.py:factory)"
        )
    model.load_state_dict(sd, strict=False)
