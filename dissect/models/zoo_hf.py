"""Hugging Face `transformers` image classifiers: `--model hf:ORG/NAME` or `hf:path/to/folder`.

    lm = load_hf("google/vit-base-patch16-224", "DEFAULT")   # config + weights from the hub
    lm = load_hf("runs/tiny_vit", "DEFAULT")                 # a folder saved with save_pretrained
    lm = load_hf("google/vit-base-patch16-224", "none")      # the config's architecture, random init
    logits = lm.model(lm.normalize(images01))                 # a tensor, not a ModelOutput

The model is `AutoModelForImageClassification`; its forward is wrapped so `model(x)` returns the
logits tensor, while layer names stay exactly as `named_modules()` spells them
(`vit.layers.11`, `classifier`). The image processor (`AutoImageProcessor`) gives mean, std,
input size and interpolation; `config.id2label` gives the class names. No repository code is
ever run (`trust_remote_code` stays off). A config whose type is no image classifier raises one
line; offline (DISSECT_OFFLINE=1, --offline, no route) a repo missing from the hub cache raises
one line naming the file, the cache folder and the URL; a repo the hub does not have raises
one line with the nearest names the hub (or the cache) knows.
"""
from __future__ import annotations

import difflib
import os
import re

import torch
from torch import nn

from dissect.errors import ModelError
from dissect.models.loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel
from dissect.models.zoo_hub import cached_file, first_line, hub_cache, require_online

PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def load_hf(spec: str, weights: str, device: str = "cpu") -> LoadedModel:
    """transformers image classifier `spec` (hub ORG/NAME or local folder) with `weights`.

    weights: "DEFAULT" (the repo's trained weights), "none" (the config's architecture, seeded
    random init) or a checkpoint file holding the model's state dict.
    """
    from dissect.models.checkpoint import fit_state_dict, is_checkpoint_path, read_state_dict
    w = weights.strip().lower()
    if w not in ("none", "default") and not is_checkpoint_path(weights):
        raise ModelError(f"--weights '{weights}' means nothing for {PREFIX}{spec}: use default "
                         "(the repo's trained weights), none (random init) or a checkpoint FILE")
    local_only = _check_source(spec, need_weights=w == "default")
    config = _config(spec, local_only)
    from transformers import AutoModelForImageClassification
    try:
        if w == "default":
            model = AutoModelForImageClassification.from_pretrained(
                spec, local_files_only=local_only, dtype=torch.float32)
        else:
            model = AutoModelForImageClassification.from_config(config, dtype=torch.float32)
    except Exception as e:     # hub, network, disk and format errors all end the same way
        raise ModelError(f"{PREFIX}{spec} could not be built ({first_line(e)}); check the name, "
                         "run again, or use --weights none") from None
    meta: dict = {"hf": spec, "hf_model_type": config.model_type}
    if w not in ("none", "default"):
        fit_state_dict(model, read_state_dict(weights), weights)
        meta["checkpoint"] = os.path.abspath(weights)
    mean, std, size, resize, interp = _preprocessing(spec, config, local_only)
    return LoadedModel(logits_only(model), PREFIX + spec, weights, _class_names(config), mean,
                       std, input_size=size, resize_size=resize, interpolation=interp,
                       device=device, meta=meta)


def _check_source(spec: str, need_weights: bool) -> bool:
    """True when everything is local (folder or hub cache): load with local_files_only."""
    if os.path.isdir(spec):
        return True
    if not _REPO_ID.fullmatch(spec):
        parent = os.path.dirname(os.path.abspath(spec))
        near = difflib.get_close_matches(os.path.basename(spec), os.listdir(parent), n=3) \
            if os.path.isdir(parent) else []
        hint = f" Nearest in {parent}: {', '.join(near)}." if near else ""
        raise ModelError(f"'{PREFIX}{spec}' is neither a folder nor a hub id ORG/NAME.{hint} Use "
                         f"{PREFIX}ORG/NAME or {PREFIX}path/to/folder (saved with save_pretrained)")
    config_cached = cached_file(spec, ["config.json"])
    if config_cached and (not need_weights or cached_file(spec, WEIGHT_FILES)):
        return True
    missing = WEIGHT_FILES[0] if config_cached else "config.json"
    require_online(f"model {PREFIX}{spec}", spec, missing,
                   fix=f"the repo's other files (config.json, {WEIGHT_FILES[0]}, "
                       f"preprocessor_config.json) into one FOLDER for --model {PREFIX}FOLDER")
    return False


def _config(spec: str, local_only: bool):
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import \
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as IMAGE_CLASSIFIERS
    try:
        config = AutoConfig.from_pretrained(spec, local_files_only=local_only)
    except Exception as e:
        if _not_found(e):
            near = nearest_repos(spec)
            hint = f" Nearest: {', '.join(PREFIX + n for n in near)}." if near else ""
            raise ModelError(f"'{PREFIX}{spec}' is not a model on the Hugging Face hub.{hint} "
                             "Check the ORG/NAME spelling") from None
        raise ModelError(f"{PREFIX}{spec}: its config could not be read ({first_line(e)}); "
                         "check the name or the folder's config.json") from None
    if config.model_type not in IMAGE_CLASSIFIERS:
        archs = ", ".join(getattr(config, "architectures", None) or []) or config.model_type
        raise ModelError(f"{PREFIX}{spec} is a '{config.model_type}' model ({archs}), not an "
                         "image classifier AutoModelForImageClassification can build (e.g. vit, "
                         "convnext, swin, deit, dinov2, resnet); pick an image-classification "
                         "model such as hf:google/vit-base-patch16-224")
    return config


def _not_found(e: Exception) -> bool:
    """Whether `e` (or what caused it) says the hub has no such repository."""
    from huggingface_hub.errors import RepositoryNotFoundError
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, RepositoryNotFoundError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "is not a valid model identifier" in str(e) or "Repository Not Found" in str(e)


def nearest_repos(spec: str, n: int = 5) -> list[str]:
    """Hub ids close to `spec`: from the hub's search (when it answers) and the local cache."""
    pool = [p.name[len("models--"):].replace("--", "/") for p in hub_cache().glob("models--*")] \
        if hub_cache().is_dir() else []
    try:
        from huggingface_hub import HfApi
        name = spec.split("/")[-1]
        for words in (name, re.split(r"[-_.]", name)[0]):
            pool += [m.id for m in HfApi().list_models(search=words, limit=20)]
    except Exception:      # search unavailable: the cache's names are all we have
        pass
    return difflib.get_close_matches(spec, sorted(set(pool)), n=n, cutoff=0.5)


def _preprocessing(spec: str, config, local_only: bool):
    """(mean, std, input size, resize size, interpolation) from the repo's image processor."""
    size = int(_get(config, "image_size") or 224)
    try:
        from transformers import AutoImageProcessor
        proc = AutoImageProcessor.from_pretrained(spec, local_files_only=local_only)
    except Exception:      # no preprocessor_config.json: ImageNet statistics, the config's size
        return IMAGENET_MEAN, IMAGENET_STD, size, None, "bilinear"
    mean = tuple(float(v) for v in (getattr(proc, "image_mean", None) or IMAGENET_MEAN))
    std = tuple(float(v) for v in (getattr(proc, "image_std", None) or IMAGENET_STD))
    shape, crop = getattr(proc, "size", None), getattr(proc, "crop_size", None)
    short = _get(shape, "shortest_edge")
    resize = short or _get(shape, "height") or size
    size = resize
    if getattr(proc, "do_center_crop", False) and _get(crop, "height"):
        size = int(_get(crop, "height"))
    elif short and getattr(proc, "crop_pct", None) and short < 384:   # ConvNeXt's rule
        size, resize = short, int(short / proc.crop_pct)
    resample = int(getattr(getattr(proc, "resample", 2), "value", getattr(proc, "resample", 2)) or 2)
    return mean[:3], std[:3], int(size), int(resize), "bicubic" if resample == 3 else "bilinear"


def _get(obj, key: str):
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _class_names(config) -> list[str]:
    labels = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = int(getattr(config, "num_labels", 0) or len(labels))
    names = [labels.get(i, f"class {i}") for i in range(n)]
    return [f"class {i}" if re.fullmatch(r"LABEL_\d+", s) else s for i, s in enumerate(names)]


_LOGIT_CLASSES: dict[type, type] = {}


def logits_only(model: nn.Module) -> nn.Module:
    """The same model (same modules, names, weights) whose `forward(x)` returns the logits tensor."""
    base = type(model)
    if base not in _LOGIT_CLASSES:
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = base.forward(self, pixel_values=x)
            return out.logits if hasattr(out, "logits") else out[0]
        _LOGIT_CLASSES[base] = type(base.__name__, (base,), {
            "forward": forward, "__module__": __name__, "__doc__": base.__doc__})
    model.__class__ = _LOGIT_CLASSES[base]
    return model
