"""A dictionary feature's decoder row saved as a direction (for steer, tcav and the pages).

    d = feature_direction(open_run("runs/toy"), "conv6@sae512", 3)
    save_direction(d, "dirs/sun-feature")          # dissect.directions.concept: as any direction

The vector is decoder[k] (unit norm) at the basis's layer; `concept` is the feature's label in
units.csv; `sigma` is the standard deviation, over the run's images, of each image's largest
projection onto the vector (max pooling, as the ToyWorld head pools); `auroc_heldout` is NaN:
the vector was not fitted to separate a concept.
"""
from __future__ import annotations

import numpy as np

from dissect.features.basis import Basis
from dissect.features.layer import parse_feature_layer
from dissect.errors import FeatureError


def feature_direction(run, name: str, feature: int):
    """dissect.directions.concept.Direction along feature `feature` of feature layer `name` of `run`."""
    from dissect.directions.concept import Direction
    parsed = parse_feature_layer(name)
    if parsed is None:
        raise FeatureError(f"'{name}' is not a feature layer (LAYER@<method><K>, e.g. "
                           "conv6@sae512); list them on the run's overview page")
    basis = Basis.load(run.layer_dir(name))
    if not 0 <= int(feature) < basis.k:
        raise FeatureError(f"feature {feature} is out of range for '{name}': it has {basis.k} "
                           f"features, numbered 0-{basis.k - 1}")
    v = basis.decoder[int(feature)].float()
    norm = float(v.norm())
    v = v / max(norm, 1e-12)
    units = run.units(name)
    label = str(units.loc[units["unit"] == int(feature), "label"].iloc[0] or f"feature {feature}")
    sigma = 0.0
    acts = run.acts(parsed[0])
    if acts is not None:
        peaks = [np.einsum("nchw,c->nhw", np.asarray(acts[i:i + 128], np.float32),
                           v.numpy()).reshape(min(128, len(acts) - i), -1).max(1)
                 for i in range(0, len(acts), 128)]
        sigma = float(np.concatenate(peaks).std())
    cfg = run.config
    return Direction(v, parsed[0], label, f"feature:{parsed[1]}", "max", float("nan"), norm,
                     sigma, cfg.get("model", ""), str(cfg.get("weights", "")),
                     source=f"{run.path}:{name}:{int(feature)}",
                     extra={"feature_layer": name, "feature": int(feature)})
