"""Models: network + weights + preprocessing + class names, and the layer listing.

    lm = load_model("resnet18")                    # DEFAULT: torchvision's pretrained weights
    lm = load_model("resnet18", "none", seed=0)    # random init, a baseline (lm.random_init)
    lm = load_model("resnet18", "resnet18_places365.pth.tar", classes="categories_places365.txt")
    lm = load_model("resnet18", "https://host/resnet18_places365.pth.tar")   # fetched once, cached
    lm = load_model("my_net.py:build")                          # a user module's factory
    lm = load_model("efficientnet_lite0")                       # preset: its trained weights, offline
    lm = load_model("timm:vit_small_patch16_224")               # any timm model (dissect.models.zoo_timm)
    lm = load_model("hf:google/vit-base-patch16-224")           # a transformers image classifier (zoo_hf)
    lm = load_model("toyworld-vit")                             # the ToyWorld ViT (dissect.toyworld.vit)
    logits = lm.model(lm.normalize(images01))      # images01: float B×3×H×W in [0, 1]
    x = lm.prepare(pil_image)                      # a photo -> 3×S×S in [0, 1] (resize + centre crop)
    for info in list_layers(lm): print(info.name, info.shape, info.spatial, info.layout)

Weights default to the trained ones (`resolve_weights`): presets (`toyworld`, `toyworld-vit`,
`efficientnet_lite0/1/2`) to their packaged weights, torchvision names to `DEFAULT`; random init is
only ever `weights="none"`. Enum weights missing from torchvision's cache ($TORCH_HOME) are
downloaded by torchvision (with a progress bar) when online; offline (`DISSECT_OFFLINE=1`,
`--offline`, or no route to the host) a ModelError names the file, where to put it and the URL
within seconds. http(s) URLs go through `dissect.models.fetch` into the same cache.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn


from dissect.models.loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel
from dissect.errors import ModelError


PRESETS = ("toyworld", "toyworld-vit", "efficientnet_lite0", "efficientnet_lite1",
           "efficientnet_lite2")
RANDOM_BADGE = "random weights: a baseline"


def is_model_file(name: str) -> bool:
    """Whether `name` is a user module (`path/file.py[:factory]`): loading it runs its code."""
    return ".py:" in name or name.endswith(".py")


is_user_module = is_model_file


def resolve_weights(name: str, weights: str | None) -> str:
    """What `weights` means for `name`: None/""/"default" -> the model's trained weights.

    toyworld -> "default" (packaged), efficientnet_lite0 and torchvision names -> "DEFAULT",
    a user module -> "none" (the factory's own model, no checkpoint on top). Anything else is
    returned unchanged; random init is only ever an explicit "none".
    """
    w = "" if weights is None else str(weights).strip()
    if w and w.lower() != "default":
        return w
    if name in ("toyworld", "toyworld-vit"):
        return "default"
    if is_user_module(name):
        return "none"
    return "DEFAULT"


def run_random_init(info: dict) -> bool:
    """Whether a run (its run.json as a dict) dissected a random-init network: a baseline.

    Runs stamp `random_init`; older ones are judged by their config (`weights` "none")."""
    if "random_init" in info:
        return bool(info["random_init"])
    cfg = info.get("config") or {}
    return str(cfg.get("weights") or "").lower() == "none" and \
        not is_user_module(str(cfg.get("model") or ""))


def load_model(name: str, weights: str | None = None, *, classes: str | None = None,
               device: str = "cpu", seed: int = 0, allow_file: bool = True) -> LoadedModel:
    """Load `name` (torchvision name, preset, timm:NAME, hf:ORG/NAME, or file.py:factory).

    weights: None (default: the trained weights, see `resolve_weights`), "none" (seeded random
    init, stamped `lm.random_init`), a torchvision enum name (IMAGENET1K_V1, DEFAULT), a
    checkpoint file (.pth, .pth.tar, .safetensors), or an http(s) URL of one (cached).
    allow_file=False refuses a file.py:factory (a name read from a run folder, not typed by the
    user, must never choose code to import).
    """
    if is_model_file(name) and not allow_file:
        raise ModelError(f"the run names a model file ({name}); a run folder never chooses code "
                         f"to import: if you trust that file, name it yourself (--model {name})")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    weights = resolve_weights(name, weights)
    url = None
    if weights.lower().startswith(("http://", "https://")):
        from dissect.models.fetch import fetch_weights
        url, weights = weights, str(fetch_weights(weights))
    torch.manual_seed(seed)
    if name == "toyworld":
        from dissect.toyworld.model import load_toyworld
        lm = load_toyworld(weights, device)
    elif name == "toyworld-vit":
        from dissect.toyworld.vit import load_toyworld_vit
        lm = load_toyworld_vit(weights, device)
    elif name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        from dissect.models.presets.efficientnet_lite import load_efficientnet_lite
        lm = load_efficientnet_lite(int(name[-1]), weights, device)
    elif name.startswith("timm:"):
        from dissect.models.zoo_timm import load_timm
        lm = load_timm(name[len("timm:"):], weights, device)
    elif name.startswith("hf:"):
        from dissect.models.zoo_hf import load_hf
        lm = load_hf(name[len("hf:"):], weights, device)
    elif is_model_file(name):
        lm = _load_user_module(name, weights)
    else:
        lm = _load_torchvision(name, weights)
    # a user factory's model with no checkpoint on top is as the factory built it, not random
    lm.meta["random_init"] = weights.lower() == "none" and not is_user_module(name)
    if url:
        lm.weights = url
        lm.meta["weights_url"] = url
        lm.meta["checkpoint"] = weights
    if classes:
        lm.class_names = read_class_names(classes, len(lm.class_names) or None)
    lm.model.eval().to(device)
    lm.device = device
    return lm


def _load_torchvision(name: str, weights: str) -> LoadedModel:
    from dissect.models.checkpoint import (classifier_classes, classifier_name, fit_state_dict,
                                    is_checkpoint_path, read_state_dict, checkpoint_classes)
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        other = name in torchvision.models.list_models()
        what = "is not a classification model" if other else "is not a torchvision model"
        raise ModelError(f"model '{name}' {what}.{hint} Use a torchvision classification name "
                         f"(e.g. resnet18), a preset ({', '.join(PRESETS)}), timm:NAME, "
                         "hf:ORG/NAME or path/to/file.py:factory")
    if weights.lower() == "none":
        model = torchvision.models.get_model(name, weights=None)
        return _wrap(model, name, weights, None)
    if is_checkpoint_path(weights):
        sd = read_state_dict(weights)
        probe = torchvision.models.get_model(name, weights=None)
        n = classifier_classes(sd, classifier_name(probe))
        kwargs = {"num_classes": n} if n else {}
        if name.startswith(("googlenet", "inception")):
            kwargs.update(aux_logits=any(k.startswith("aux") for k in sd), init_weights=False)
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        fit_state_dict(model, sd, weights)
        lm = _wrap(model, name, weights, checkpoint_classes(weights))
        lm.meta["checkpoint"] = os.path.abspath(weights)
        return lm
    enum = _weights_enum(name, weights)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
    if not os.path.isfile(path):
        from dissect.models.fetch import offline_reason, offline_message
        why = offline_reason(enum.url)
        if why:
            home = os.environ.get("TORCH_HOME", "unset, so ~/.cache/torch")
            raise ModelError(offline_message(
                f"weights {enum}", path, enum.url, why, "or pass --weights FILE, or --weights "
                f"none for a random-init baseline ($TORCH_HOME is {home})"))
    try:   # torchvision reads the cached file, or downloads it there with a progress bar
        model = torchvision.models.get_model(name, weights=enum)
    except (OSError, RuntimeError) as e:   # URLError is an OSError; a bad hash a RuntimeError
        raise ModelError(f"weights {enum}: download from {enum.url} to {path} failed "
                         f"({str(e).splitlines()[0][:160]}); put the file there by hand or run "
                         "again") from None
    t = enum.transforms()
    lm = LoadedModel(model, name, weights, list(enum.meta.get("categories") or []),
                     tuple(t.mean), tuple(t.std), input_size=int(t.crop_size[0]),
                     resize_size=int(t.resize_size[0]),
                     interpolation=t.interpolation.value, meta={"weights_enum": str(enum)})
    if not lm.class_names:
        lm.class_names = _default_names(model)
    return lm


def _weights_enum(name: str, weights: str):
    try:
        enum_cls = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ModelError(f"model '{name}' has no torchvision weights; use --weights none or FILE") from None
    member = weights.split(".")[-1]
    try:
        return enum_cls[member] if member in enum_cls.__members__ else enum_cls[member.upper()]
    except KeyError:
        names = ", ".join(["DEFAULT"] + [w.name for w in enum_cls])
        raise ModelError(f"'{weights}' is not a weights name of {name}: use one of {names}, "
                         "a checkpoint file, or none") from None


def _wrap(model: nn.Module, name: str, weights: str, class_names: list[str] | None) -> LoadedModel:
    return LoadedModel(model, name, weights, class_names or _default_names(model),
                       IMAGENET_MEAN, IMAGENET_STD)


def _default_names(model: nn.Module) -> list[str]:
    return [f"class {i}" for i in range(_num_classes(model))]


def _num_classes(model: nn.Module) -> int:
    from dissect.models.checkpoint import classifier_name
    cls = classifier_name(model)
    if cls is None:
        return 1000
    module = model.get_submodule(cls)
    return int(getattr(module, "out_features", None) or module.out_channels)


def _load_user_module(spec: str, weights: str) -> LoadedModel:
    """`path/to/file.py:factory` -> the factory's model (an nn.Module or a LoadedModel)."""
    path, _, factory = spec.partition(":") if ".py:" in spec else (spec, "", "")
    factory = factory or "build_model"
    if not os.path.isfile(path):
        raise ModelError(f"model file '{path}' does not exist; use --model path/to/file.py:factory")
    mod_name = "dissect_user_" + re.sub(r"\W", "_", os.path.abspath(path))
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise ModelError(f"model file '{path}' failed to import: {type(e).__name__}: {e}") from None
    fn: Callable | None = getattr(module, factory, None)
    if not callable(fn):
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ModelError(f"'{path}' has no function '{factory}' (it defines: {', '.join(found[:8])}); "
                         f"use --model {path}:NAME")
    out = fn()
    if isinstance(out, LoadedModel):
        lm = out
    elif isinstance(out, nn.Module):
        lm = _wrap(out, spec, weights, getattr(module, "CLASS_NAMES", None))
    else:
        raise ModelError(f"{spec} returned {type(out).__name__}; it must return an nn.Module")
    if weights.lower() != "none":
        from dissect.models.checkpoint import checkpoint_classes, fit_state_dict, is_checkpoint_path, read_state_dict
        if not is_checkpoint_path(weights):
            raise ModelError(f"--weights for {spec} must be a checkpoint file or none, not '{weights}'")
        fit_state_dict(lm.model, read_state_dict(weights), weights)
        lm.class_names = checkpoint_classes(weights) or lm.class_names
    lm.weights = weights
    return lm


def read_class_names(path: str, expected: int | None = None) -> list[str]:
    """Class names from a file: one per line, or Places365's "/a/abbey 0" lines (sorted by index)."""
    if not os.path.isfile(path):
        raise ModelError(f"classes file '{path}' does not exist; give one class name per line")
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    indexed = [re.fullmatch(r"(\S+)\s+(\d+)", ln) for ln in lines]
    if lines and all(indexed):
        pairs = sorted((int(m[2]), m[1]) for m in indexed)
        names = [re.sub(r"^/[a-z]/", "", n) for _, n in pairs]   # "/a/abbey" -> "abbey"
    else:
        names = lines
    if expected and len(names) != expected:
        raise ModelError(f"classes file '{path}' has {len(names)} names but the model has "
                         f"{expected} outputs; give one name per output")
    return names


@dataclass
class LayerInfo:
    name: str
    shape: tuple[int, ...]   # raw output shape without batch, e.g. (512, 7, 7), (197, 768)
    spatial: bool            # a K×h×w output with more than one position: dissectable
    layout: str = "nchw"     # how the output reads: nchw | nhwc | tokens (N×C) | vector | other


def _is_spatial(out: torch.Tensor) -> bool:
    return out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1


def _layout(out: torch.Tensor) -> str:
    """A square input gives a square grid: B×C×h×h is nchw, B×h×h×C (C != h) channels-last,
    B×N×C tokens; a 4-d output with no square grid (MaxViT's window partitions) is "other"."""
    if out.dim() == 4:
        if out.shape[2] == out.shape[3]:
            return "nchw"
        return "nhwc" if out.shape[1] == out.shape[2] else "other"
    return {3: "tokens", 2: "vector"}.get(out.dim(), "other")


def list_layers(lm: LoadedModel, size: int | None = None) -> list[LayerInfo]:
    """Every named module whose output is a tensor, with its shape, from one dummy forward pass."""
    size = size or lm.input_size
    names = [n for n, _ in lm.model.named_modules() if n]
    acts: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(_module, _inputs, out):
            out = out[0] if isinstance(out, (tuple, list)) and out else out
            if isinstance(out, torch.Tensor):   # skip dict-like outputs (transformers' ModelOutput)
                acts[name] = out.detach()
        return hook

    handles = [lm.model.get_submodule(n).register_forward_hook(record(n)) for n in names]
    try:
        with torch.no_grad():
            lm.model(torch.zeros(1, 3, size, size, device=lm.device))
    except (RuntimeError, ValueError, AssertionError) as e:   # e.g. a ViT's fixed input size
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ModelError(f"a forward pass of {lm.name} on a {size}×{size} input failed "
                         f"({type(e).__name__}: {first}); try --size {lm.input_size}") from None
    finally:
        for h in reversed(handles):
            h.remove()
    return [_info(lm, n, acts[n]) for n in names if n in acts]


def _info(lm: LoadedModel, name: str, raw: torch.Tensor) -> LayerInfo:
    """A layer as the tools read it: the C×h×w map its layout gives (tokens and channels-last
    included, dissect.models.layout), and the layout of its raw output."""
    from dissect.models.layout import capture_map
    try:
        out = capture_map(raw, lm.model, lm.model.get_submodule(name), name)
    except ValueError:           # an explicit --layout that this layer does not fit
        out = raw
    return LayerInfo(name, tuple(out.shape[1:]), _is_spatial(out), _layout(raw))


def layer_info(lm: LoadedModel, layer: str, size: int | None = None) -> LayerInfo:
    """One layer's output as the tools read it (see `_info`). LayerNotFound for a name the model
    lacks; the forward pass stops after it."""
    from dissect.models.hooks import capture, get_layer, stopped_forward
    get_layer(lm.model, layer)
    size = size or lm.input_size
    with torch.no_grad(), capture(lm.model, [layer], stop_after=True, raw=True) as acts:
        stopped_forward(lm.model, torch.zeros(1, 3, size, size, device=lm.device))
    if layer not in acts:
        raise ModelError(f"layer '{layer}' did not run in a forward pass of {lm.name}; pick another")
    return _info(lm, layer, acts[layer])
