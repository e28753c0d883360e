"""What to visualise, checked against the model before any optimisation starts.

    check_request(lm, "conv6", cfg)                          # spatial layer, steps, size
    t = unit_targets(lm, "conv6", "0,5-7", cfg.size)         # Targets of units
    t = basis_targets(run, "layer4@sae512", "layer4", lm, units="3,9")   # decoder rows
    t = direction_targets("dirs/sun", lm, "conv6")            # one saved direction

Every refusal is one line naming the thing and the fix (VisualizeError, LayerError,
DirectionError, AblationError for a unit out of range).
"""
from __future__ import annotations

import torch

from dissect.errors import LayerError, VisualizeError
from dissect.visualize.config import MAX_SIZE, METHODS, MIN_SIZE, VisConfig
from dissect.visualize.objectives import Targets


def layer_channels(lm, layer: str, size: int) -> int:
    """The layer's unit count at input `size` (B×C×h×w, or B×N×C tokens: C); LayerError when
    it has no spatial output."""
    from dissect.models.registry import layer_info
    info = layer_info(lm, layer, size)
    tokens = len(info.shape) == 2 and info.shape[0] > 1        # B×N×C: C units over N tokens
    if not (info.spatial or tokens):
        raise LayerError(f"layer '{layer}' of {lm.name} has no spatial output (shape "
                         f"{list(info.shape)}) at {size} px, so it has no positions to average; "
                         "pick a conv or token layer (python -m dissect layers --model "
                         f"{lm.name}) or a larger --size")
    return int(info.shape[-1] if tokens else info.shape[0])


def check_request(lm, layer: str, cfg: VisConfig) -> int:
    """Refuse bad steps, size or method, and a layer with no spatial output; the unit count."""
    if cfg.method not in METHODS:
        raise VisualizeError(f"--method {cfg.method} is not known; use one of {', '.join(METHODS)}")
    if cfg.steps < 1:
        raise VisualizeError(f"--steps {cfg.steps}: the optimisation needs at least 1 step "
                             "(256 is the usual)")
    if cfg.size < MIN_SIZE:
        raise VisualizeError(f"--size {cfg.size} is too small for the transforms (pad {cfg.pad}, "
                             f"jitter {'+'.join(map(str, cfg.jitter))} px); use --size {MIN_SIZE} "
                             "or more (128 is the usual)")
    if cfg.size > MAX_SIZE:
        raise VisualizeError(f"--size {cfg.size} is larger than {MAX_SIZE} px; the canvas is "
                             "optimised whole at every step: use 128-512")
    return layer_channels(lm, layer, cfg.size)


def unit_targets(units: list[int], channels: int, layer: str) -> Targets:
    """Targets for these units; AblationError naming the range for one out of range."""
    from dissect.errors import AblationError
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise AblationError(f"unit {bad[0]} is out of range for layer '{layer}': it has "
                            f"{channels} units, numbered 0-{channels - 1}")
    return Targets.of_units(units)


def read_basis(run, feature_layer: str) -> torch.Tensor:
    """decoder float32 [K, C] of RUN/layers/<feature_layer>/basis.safetensors."""
    from safetensors.torch import load_file
    path = run.path / "layers" / feature_layer / "basis.safetensors"
    if not path.is_file():
        raise VisualizeError(f"{path} is missing: make the feature layer first with python -m "
                             f"dissect features {run.path} --layer {feature_layer.split('@')[0]} "
                             "--method sae")
    try:
        dec = load_file(str(path))["decoder"]
    except (OSError, ValueError, KeyError) as e:
        raise VisualizeError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:80]}); make "
                             "the feature layer again (python -m dissect features ... "
                             "--overwrite)") from None
    if dec.dim() != 2:
        raise VisualizeError(f"{path}: decoder has shape {list(dec.shape)}, expected [K, C]")
    return dec.float()


def basis_targets(decoder: torch.Tensor, feature_layer: str, layer: str, channels: int,
                  features: list[int] | None, cosine: bool = False) -> Targets:
    """Targets along decoder rows `features` (all rows when None) of a basis of `layer`."""
    from dissect.errors import AblationError
    module = feature_layer.split("@")[0]
    if module != layer:
        raise VisualizeError(f"--basis {feature_layer} is a basis of layer '{module}', not "
                             f"'{layer}'; use --layer {module}")
    k, c = decoder.shape
    if c != channels:
        raise VisualizeError(f"--basis {feature_layer} has rows of {c} units but layer '{layer}' "
                             f"of this model has {channels}; use the model the run dissected")
    features = list(range(k)) if features is None else features
    bad = [f for f in features if not 0 <= f < k]
    if bad:
        raise AblationError(f"feature {bad[0]} is out of range for {feature_layer}: it has {k} "
                            f"features, numbered 0-{k - 1}")
    return Targets.of_directions(decoder[features], [str(f) for f in features], cosine)


def direction_targets(folder: str, lm, layer: str, channels: int, cosine: bool = False) -> Targets:
    """One target along a saved direction (dissect.directions.concept); DirectionError when it was made
    for another model, layer or width."""
    from dissect.directions.concept import check_direction, load_direction
    d = load_direction(folder)
    check_direction(d, lm, layer, channels)
    return Targets.of_directions(d.vector[None], [d.concept or "direction"], cosine)
