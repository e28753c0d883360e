"""TCAV (Kim et al. 2018): how often a class logit rises along a concept's activation vector.

    res = tcav(lm, "conv6", ["sun", "checkered"], target="beach", lset=lset, probe=probe, runs=20)
    res[0].score, res[0].p_value, res[0].significant, res[0].random_scores

For each of `runs` repetitions a CAV is fitted (logistic regression on pooled features, as the
head pools) between a sample of concept images and a sample of random probe images, and a
random CAV between two random samples. The directional derivative of the target logit along a
CAV (added at every position, as steering does) is taken on every target-class image of the
set; the score is the fraction where it is positive. `p_value` is Welch's t-test of the concept
scores against the random scores; `significant` means p ≤ 0.05 / (number of concepts tested)
(Bonferroni).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from dissect.errors import DirectionError
from dissect.directions.pooled import check_channels

ALPHA = 0.05


@dataclass
class TcavResult:
    concept: str
    target: str
    layer: str
    score: float
    p_value: float
    significant: bool
    random_scores: list[float]
    concept_scores: list[float]
    n_target: int
    n_concept: int
    threshold: float = ALPHA
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        r = lambda v: round(float(v), 6)   # noqa: E731
        return {"concept": self.concept, "target": self.target, "layer": self.layer,
                "score": r(self.score), "p_value": r(self.p_value),
                "significant": bool(self.significant), "threshold": r(self.threshold),
                "random_scores": [r(v) for v in self.random_scores],
                "concept_scores": [r(v) for v in self.concept_scores],
                "n_target": self.n_target, "n_concept": self.n_concept, **self.extra}


def layer_gradients(lm, layer: str, batches, target: int) -> np.ndarray:
    """[N, K]: ∂ logit_target / ∂ (the same shift added at every position of `layer`)."""
    from dissect.models.hooks import intervene
    grads = []
    held: list[torch.Tensor] = []

    def edit(out: torch.Tensor) -> torch.Tensor:
        check_channels(layer, out)
        h = out.detach().requires_grad_(True)
        held.append(h)
        return h

    with torch.enable_grad(), intervene(lm.model, {layer: edit}):
        for x01 in batches:
            held.clear()
            logits = lm.model(lm.normalize(x01.to(lm.device)))
            g, = torch.autograd.grad(logits[:, target].sum(), held[-1])
            grads.append(g.sum(dim=(2, 3)).float().cpu().numpy())
    return np.concatenate(grads) if grads else np.zeros((0, 0), np.float32)


def _cav(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logistic-regression CAV pointing from `b` to `a` (in activation units)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    X = np.concatenate([a, b])
    y = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
    sc = StandardScaler().fit(X)
    clf = LogisticRegression(max_iter=1000).fit(sc.transform(X), y)
    return clf.coef_[0] / sc.scale_


def ttest_p(concept_scores: Sequence[float], random_scores: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value; 0 or 1 when both samples are constant."""
    from scipy.stats import ttest_ind
    a, b = np.asarray(concept_scores, float), np.asarray(random_scores, float)
    if a.std() == 0 and b.std() == 0:
        return 0.0 if a.mean() != b.mean() else 1.0
    import warnings
    with warnings.catch_warnings():     # one constant sample: scipy warns, the p-value is fine
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


@torch.no_grad()
def _features(lm, probe, concepts, layer, pooling, batch_size):
    from dissect.directions.concept import contrast_from_probe
    X, has = None, {}
    for c in concepts:
        con = contrast_from_probe(lm, probe, c, layer, pooling, batch_size)
        X = con.X if X is None else X
        has[c] = con.y
    return X, has


def tcav(lm, layer: str, concepts: Sequence[str], target: str, lset, probe, runs: int = 20,
         pooling: str | None = "auto", seed: int = 0, batch_size: int = 32,
         sample: int = 50) -> list[TcavResult]:
    """TCAV of each concept for class `target` over the target images of `lset`."""
    from dissect.directions.pooled import resolve_pooling
    from dissect.interventions.labelled import class_index, norm_name
    if runs < 2:
        raise DirectionError(f"--random {runs}: TCAV needs at least 2 random runs (20 is usual)")
    t = class_index(lm).get(norm_name(target))
    if t is None:
        raise DirectionError(f"--target {target} is not a class of {lm.name}; classes are e.g. "
                             f"{', '.join(lm.class_names[:9])}")
    pooling = resolve_pooling(lm.model, pooling)
    if pooling == "spatial":
        raise DirectionError("TCAV fits CAVs on pooled features: use --pooling auto, max or mean")
    idx = np.flatnonzero(lset.labels == t)
    if len(idx) < 2:
        raise DirectionError(f"set '{lset.spec}' has {len(idx)} image(s) of class {target}; use a "
                             "larger set")
    batches = (torch.stack([lset.load(int(i)) for i in idx[s:s + batch_size]])
               for s in range(0, len(idx), batch_size))
    G = layer_gradients(lm, layer, batches, t)
    X, has = _features(lm, probe, concepts, layer, pooling, batch_size)
    rng = np.random.default_rng(seed)
    m = min(sample, len(X) // 2)
    randoms = [rng.choice(len(X), m, replace=False) for _ in range(runs + 1)]
    random_scores = [float((G @ _cav(X[randoms[i]], X[randoms[i + 1]]) > 0).mean())
                     for i in range(runs)]
    out = []
    cut = ALPHA / len(concepts)
    for c in concepts:
        pos = np.flatnonzero(has[c])
        k = min(m, len(pos))
        scores = [float((G @ _cav(X[rng.choice(pos, k, replace=False)], X[randoms[i]]) > 0).mean())
                  for i in range(runs)]
        p = ttest_p(scores, random_scores)
        out.append(TcavResult(c, lm.class_names[t], layer, float(np.mean(scores)), p, p <= cut,
                              random_scores, scores, len(idx), len(pos), cut,
                              {"pooling": pooling, "runs": runs}))
    return out
