"""timm models: `--model timm:NAME` for any of timm's architectures, with its weights and preprocessing.

    lm = load_timm("resnet18", "none")                     # seeded random init, no network
    lm = load_timm("vit_small_patch16_224", "DEFAULT")     # trained weights from the HF hub
    lm = load_timm("resnet18.a1_in1k", "DEFAULT")          # a named pretrained tag
    lm = load_timm("resnet18", "resnet18.safetensors")     # a local checkpoint (strict)

Trained weights come through timm's own loader (`timm.create_model(name, pretrained=True)`),
which downloads them from the Hugging Face hub into huggingface_hub's cache with a progress bar;
a cached file is read with no network request. Offline (DISSECT_OFFLINE=1, --offline, or no
route to the hub) a ModelError names the file, the cache folder and the URL within seconds.
Mean, std, input size, crop and interpolation come from timm's data config
(`timm.data.resolve_model_data_config`). Class names: ImageNet's for 1000 outputs (the same
list torchvision models carry), timm's ImageNet subsets otherwise, else "class i".
A name timm does not know raises ModelError with the nearest names (`timm.list_models`).
"""
from __future__ import annotations

import difflib
import math
import os
import re

from torch import nn

from dissect.errors import ModelError
from dissect.models.loaded import LoadedModel
from dissect.models.zoo_hub import cached_file, first_line, hub_offline, require_online

PREFIX = "timm:"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")   # what timm tries on the hub, in order


def check_timm_name(name: str) -> None:
    """ModelError with the nearest names when timm has no model (or pretrained tag) `name`."""
    import timm
    arch, _, tag = name.partition(".")
    if timm.is_model(arch) and (not tag or name in timm.list_pretrained(arch + ".*")):
        return
    pool = timm.list_pretrained(arch + ".*") if tag and timm.is_model(arch) else \
        timm.list_models() + timm.list_pretrained()
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.5)
    hint = f" Nearest: {', '.join(PREFIX + c for c in close)}." if close else ""
    what = f"has no pretrained tag '{tag}'" if tag and timm.is_model(arch) else "is not a timm model"
    family = re.match(r"[a-z]*", arch)[0] or arch[:1]
    raise ModelError(f"'{PREFIX}{name}' {what}.{hint} List them with: python -c \"import timm; "
                     f"print(timm.list_pretrained('{family}*'))\"")


def load_timm(name: str, weights: str, device: str = "cpu") -> LoadedModel:
    """timm model `name` (arch or arch.tag) with weights "none", "DEFAULT" or a checkpoint file."""
    import timm
    check_timm_name(name)
    from dissect.models.checkpoint import is_checkpoint_path
    w = weights.strip()
    meta: dict = {"timm": name}
    if w.lower() == "none":
        model = timm.create_model(name, pretrained=False)
    elif w.lower() == "default":
        model = _pretrained(name, meta)
    elif is_checkpoint_path(w):
        model = _from_checkpoint(name, w)
        meta["checkpoint"] = os.path.abspath(w)
    else:
        raise ModelError(f"--weights '{weights}' means nothing for {PREFIX}{name}: use default "
                         f"(trained, from the hub), none (random init), a checkpoint FILE or URL; "
                         f"pick a pretrained tag with --model {PREFIX}{name.split('.')[0]}.TAG")
    return _wrap(model, PREFIX + name, weights, meta, device)


def _pretrained(name: str, meta: dict) -> nn.Module:
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else (cfg or {})
    repo, url = cfg.get("hf_hub_id"), cfg.get("url")
    if not repo and not url:
        raise ModelError(f"{PREFIX}{name} has no pretrained weights in timm; use --weights none "
                         "(random init) or --weights FILE")
    alt = "or --weights none for a random-init baseline"
    if repo:
        repo, _, revision = repo.partition("@")
        files = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(HUB_FILES)
        meta.update(hub_repo=repo, hub_file=files[0])
        cached = cached_file(repo, files, revision or None)
        if cached:                     # read from the cache, no request at all
            meta["checkpoint"] = cached
            with hub_offline():
                return _create(name, f"the cached {cached}")
        require_online(f"weights {PREFIX}{name}", repo, files[0], revision or None, alt=alt)
        return _create(name, f"{repo} on the Hugging Face hub")
    from dissect.models.fetch import offline_message, offline_reason, weights_cache_dir
    path = weights_cache_dir() / os.path.basename(url)
    meta["weights_url"] = url
    if not path.is_file():
        why = offline_reason(url)
        if why:
            raise ModelError(offline_message(f"weights {PREFIX}{name}", path, url, why, alt))
    return _create(name, url)


def _create(name: str, source: str) -> nn.Module:
    import timm
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as e:    # hub, network, disk and format errors all end the same way
        raise ModelError(f"trained weights of {PREFIX}{name} could not be loaded from {source} "
                         f"({first_line(e)}); run again, pass --weights FILE, or --weights none"
                         ) from None


def _from_checkpoint(name: str, path: str) -> nn.Module:
    import timm
    from dissect.models.checkpoint import classifier_classes, fit_state_dict, read_state_dict
    sd = read_state_dict(path)
    probe = timm.create_model(name, pretrained=False)
    head = probe.pretrained_cfg.get("classifier") if hasattr(probe, "pretrained_cfg") else None
    head = head[0] if isinstance(head, (tuple, list)) else head
    n = classifier_classes(sd, head)
    model = probe if not n or n == getattr(probe, "num_classes", None) else \
        timm.create_model(name, pretrained=False, num_classes=n)
    fit_state_dict(model, sd, path)
    return model


def _wrap(model: nn.Module, name: str, weights: str, meta: dict, device: str) -> LoadedModel:
    from timm.data import resolve_model_data_config
    cfg = resolve_model_data_config(model)
    size = int(cfg["input_size"][-2])
    crop = float(cfg.get("crop_pct") or 0.875)
    interp = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
    meta["data_config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    return LoadedModel(model, name, weights, class_names(model), tuple(cfg["mean"]),
                       tuple(cfg["std"]), input_size=size,
                       resize_size=int(math.floor(size / crop)), interpolation=interp,
                       device=device, meta=meta)


def class_names(model: nn.Module) -> list[str]:
    """ImageNet names for 1000 outputs (torchvision's list), timm's subset names, else generic."""
    n = int(getattr(model, "num_classes", 0) or 0)
    if n == 1000:
        import torchvision
        return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
        subset = infer_imagenet_subset(model)
        if subset:
            names = ImageNetInfo(subset).label_descriptions()
            if len(names) == n:
                return [d.split(",")[0].strip() for d in names]
    except Exception:          # no subset file for this model: generic names below
        pass
    return [f"class {i}" for i in range(n)]

