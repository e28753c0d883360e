"""Feature importance per class: remove each dictionary feature alone, measure the drop.

    imp = rank_features(lm, lset, run, "conv6@sae512")     # dissect.interventions.importance.Importance
    imp.losses(17)            # the classes that lose most without feature 17
    imp.top("beach", 10)      # the 10 features whose removal hurts beach most

Each feature is removed through the same write-back as `ablate --layer conv6@sae512`
(dissect.features.ablate.FeatureIntervention: x <- x + (z'_k - z_k) * decoder[k] at every
position). Per batch the layer's output is encoded once and only what follows the layer is
re-run per feature (dissect.interventions.replay), so the cost is K suffix runs per batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from dissect.errors import AblationError
from dissect.features.ablate import FeatureIntervention, feature_intervention
from dissect.interventions.importance import Importance, tabulate
from dissect.interventions.labelled import LabelledSet
from dissect.models.hooks import capture, intervene
from dissect.models.registry import LoadedModel
from dissect.interventions.replay import Replay


@torch.no_grad()
def rank_features(lm: LoadedModel, lset: LabelledSet, run, name: str, mode: str = "zero",
                  value: float = 0.0, batch_size: int = 32,
                  progress: Callable[[int, int], None] | None = None) -> Importance:
    """Remove each feature of feature layer `name` of `run` alone; per class, the drop in
    balanced accuracy, accuracy (recall) and true-class logit (an Importance whose "units" are
    the features). `progress(done, total)` is called per feature and batch (it may raise)."""
    tell = progress or (lambda done, total: None)
    whole = feature_intervention(run, name, (), mode, value)   # checks the layer, loads basis
    layer, k, n = whole.layer, whole.basis.k, len(lset)
    if n == 0:
        raise AblationError(f"set '{getattr(lset, 'spec', '')}' has no images")
    labels = np.asarray(lset.labels)
    y = torch.as_tensor(labels, device=lm.device)
    pred = np.zeros((n, k), np.int64)
    true_logit = np.zeros((n, k), np.float64)
    base_logits, start = [], 0
    for _idx, x01 in lset.batches(batch_size):
        x = lm.normalize(x01.to(lm.device))
        rp = Replay(lm.model, [layer])
        with capture(lm.model, [layer]) as acts:
            logits = rp.record(x).float()
        if layer not in acts:
            raise AblationError(f"layer '{layer}' did not run in a forward pass of {lm.name}")
        base_logits.append(logits)
        codes = whole.basis.to(lm.device).encode_maps(acts[layer].float())
        rows, yb = slice(start, start + len(x01)), y[start:start + len(x01)]
        for u in range(k):
            tell(start * k + u * len(x01), n * k)
            iv = FeatureIntervention(layer, whole.basis, (u,), mode, value, whole.means, name)
            with intervene(lm.model, {layer: lambda out, iv=iv: iv.apply(out, codes=codes)}):
                out = rp.run().float()
            pred[rows, u] = out.argmax(1).cpu().numpy()
            true_logit[rows, u] = out.gather(1, yb[:, None])[:, 0].cpu().numpy()
        start += len(x01)
    return tabulate(lm, name, mode, labels, y, torch.cat(base_logits), pred, true_logit, False)
