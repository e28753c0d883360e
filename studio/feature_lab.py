"""Feature layers (`conv6@sae512`) in the ablation lab and on the unit page (not a page).

    k = layer_size(run, {"conv6": 128}, "conv6@sae512")           # 512 features
    iv = lab_intervention(run, "conv6@sae512", [3], "zero", 0.0)     # what the lab applies
    base_layer("conv6@sae512")                                       # "conv6": the module edited

A feature layer's intervention is the command's own (dissect.features.ablate.feature_intervention,
the write-back x <- x + sum_k (z'_k - z_k) * decoder[k]), so the lab and
`python -m dissect ablate --run RUN --layer conv6@sae512 --units 3` give the same probabilities.
Plain layers get dissect.interventions.ablation.Intervention, as before.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from dissect.errors import FeatureError
from dissect.features.layer import parse_feature_layer
from dissect.interventions.ablation import Intervention


def is_feature(layer: str | None) -> bool:
    """True for a feature layer's name (LAYER@<method><K>)."""
    return layer is not None and parse_feature_layer(layer) is not None


def base_layer(layer: str) -> str:
    """The model's layer an intervention on `layer` edits: itself, or the feature layer's
    basis layer (conv6@sae512 -> conv6)."""
    parsed = parse_feature_layer(layer)
    return parsed[0] if parsed else layer


def layer_size(run, layers: dict[str, int], layer: str) -> int | None:
    """Units of a model layer (from `layers`), or features of a feature layer of `run` (its
    basis's K, checked against the basis layer's channels); None when neither applies."""
    parsed = parse_feature_layer(layer)
    if parsed is None:
        return layers.get(layer)
    if run is None or parsed[0] not in layers:
        return None
    from dissect.features.basis import Basis
    basis = Basis.load(run.layer_dir(layer))
    if basis.channels != layers[parsed[0]]:
        raise FeatureError(f"'{layer}' is a basis of {basis.channels} channels, but layer "
                           f"'{parsed[0]}' has {layers[parsed[0]]}; refit it with "
                           "`python -m dissect features ... --overwrite`")
    return basis.k


def lab_intervention(run, layer: str, units: Sequence[int], mode: str = "zero",
                     value: float = 0.0, means: torch.Tensor | None = None):
    """The lab's intervention on `units` of `layer`: an Intervention for a layer of units, the
    ablate command's FeatureIntervention for a feature layer. `means` ([units] or [K]) for
    mode "mean" (the lab caches them; the command reads the same acts.npy)."""
    if not is_feature(layer):
        return Intervention(layer, tuple(units), mode, value, means)
    from dissect.features.ablate import feature_intervention
    if mode != "mean" or means is None:
        return feature_intervention(run, layer, units, mode, value)
    iv = feature_intervention(run, layer, units, "zero", value)     # no second pass for means
    return dataclasses.replace(iv, mode="mean", means=means)


def what_name(layer: str, n: int = 2) -> str:
    """"units" or "features" (singular with n == 1)."""
    word = "feature" if is_feature(layer) else "unit"
    return word if n == 1 else word + "s"

