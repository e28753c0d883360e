"""Layer-wise readout: a linear early-exit head per layer, DoLa's contrast and overthinking.

    r = readout(lm, lset, ["conv2", "conv4", "conv6"], dola=True, concepts=["sun"])
    r["layers"]        # [{"layer", "acc_heldout", "auroc": {"sun": ...}}, ...]
    r["final_acc"], r["dola"], r["overthinking"]

Features are each layer's output pooled as the network's head pools (cached on disk per model,
set and layers). Heads (scikit-learn logistic regression on standardised features) are fitted on
a seeded half of the set and scored on the other half. DoLa (Chuang et al. 2023): for each
held-out image the premature layer is the head of largest Jensen–Shannon divergence from the
model's own output; the contrast log p_final − log p_premature is taken over the classes inside
the relative-top set (p_final ≥ 0.1·max p_final; the others are −inf). Overthinking: the share
of the final head's errors where some earlier head was right.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dissect.errors import DirectionError
from dissect.directions.pooled import cached_set_features, resolve_pooling

RELATIVE_TOP = 0.1


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def jsd(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (nats) between rows of two log-probability arrays."""
    p, q = np.exp(logp), np.exp(logq)
    m = 0.5 * (p + q)
    logm = np.log(np.maximum(m, 1e-300))
    kl = lambda a, la: np.where(a > 0, a * (la - logm), 0.0).sum(1)   # noqa: E731
    return 0.5 * kl(p, logp) + 0.5 * kl(q, logq)


def dola_contrast(final_logp: np.ndarray, layer_logps: Sequence[np.ndarray],
                  relative_top: float = RELATIVE_TOP) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], premature layer index [N]) by DoLa's rule with its relative-top filter.

    Where the premature head equals the final distribution the score is the final log-prob."""
    stack = np.stack(layer_logps)                                  # L×N×C
    div = np.stack([jsd(final_logp, lp) for lp in stack])         # L×N
    chosen = div.argmax(0)
    prem = stack[chosen, np.arange(final_logp.shape[0])]
    score = final_logp - prem
    same = div[chosen, np.arange(final_logp.shape[0])] <= 1e-12
    score[same] = final_logp[same]
    keep = final_logp >= final_logp.max(1, keepdims=True) + np.log(relative_top)
    return np.where(keep, score, -np.inf), chosen


def _head():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def _full_logp(head, X: np.ndarray, n_classes: int) -> np.ndarray:
    """log-probabilities over every class (classes unseen in training get −inf … as 1e-12)."""
    out = np.full((len(X), n_classes), np.log(1e-12))
    out[:, head.classes_] = np.log(np.maximum(head.predict_proba(X), 1e-12))
    return _log_softmax(out)


def readout(lm, lset, layers: Sequence[str], pooling: str | None = "auto", seed: int = 0,
            dola: bool = False, concepts: Sequence[str] = (), batch_size: int = 32,
            use_cache: bool = True) -> dict:
    """Held-out accuracy of a linear head per layer (+ per-concept AUROC, DoLa, overthinking)."""
    from dissect.directions.concept import auroc
    from dissect.probes.splits import heldout_halves
    layers = list(layers)
    if not layers:
        raise DirectionError("--layers: name at least one layer, e.g. --layers conv2,conv4,conv6")
    if len(lset) < 20:
        raise DirectionError(f"set '{lset.spec}' has {len(lset)} images; a readout needs at least "
                             "20 (half fit the heads, half measure them)")
    pooling = resolve_pooling(lm.model, pooling)
    if pooling == "spatial":
        raise DirectionError("readout heads read pooled features: use --pooling auto, max or mean")
    feats = cached_set_features(lm, lset, layers, pooling, batch_size, use_cache=use_cache)
    tr, te = heldout_halves(len(lset), seed, "random")
    y = lset.labels
    C = len(lm.class_names)
    final_logp = _log_softmax(feats.logits.astype(np.float64))
    final_pred = final_logp.argmax(1)
    has = {}
    if concepts:
        from dissect.directions.presence import concept_presence
        has = concept_presence(lset, concepts)
    rows, logps, preds = [], [], []
    for l in layers:
        X = feats.layers[l].astype(np.float64)
        head = _head().fit(X[tr], y[tr])
        lp = _full_logp(head, X[te], C)
        logps.append(lp)
        preds.append(lp.argmax(1))
        row = {"layer": l, "units": int(X.shape[1]),
               "acc_heldout": round(float((preds[-1] == y[te]).mean()), 6)}
        if has:
            row["auroc"] = {}
            for c, h in has.items():
                if h[tr].all() or not h[tr].any():
                    row["auroc"][c] = None
                    continue
                from sklearn.linear_model import LogisticRegression
                from sklearn.pipeline import make_pipeline
                from sklearn.preprocessing import StandardScaler
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
                clf.fit(X[tr], h[tr])
                a = auroc(h[te], clf.decision_function(X[te]))
                row["auroc"][c] = None if np.isnan(a) else round(float(a), 6)
        rows.append(row)
    out = {"model": lm.name, "weights": lm.weights, "set": lset.spec, "images": len(lset),
           "heldout_images": int(te.sum()), "pooling": pooling, "layers": rows,
           "final_acc": round(float((final_pred[te] == y[te]).mean()), 6),
           "cached": bool(feats.meta.get("cached"))}
    wrong = final_pred[te] != y[te]
    early_right = np.zeros(int(te.sum()), bool)
    for p in preds[:-1] if len(preds) > 1 else preds:
        early_right |= p == y[te]
    out["overthinking"] = {"errors": int(wrong.sum()),
                           "early_right": int((wrong & early_right).sum()),
                           "rate": round(float((wrong & early_right).sum() / wrong.sum()), 6)
                           if wrong.any() else 0.0}
    if dola:
        score, chosen = dola_contrast(final_logp[te], logps)
        pred = score.argmax(1)
        out["dola"] = {"acc": round(float((pred == y[te]).mean()), 6),
                       "final_acc": out["final_acc"], "relative_top": RELATIVE_TOP,
                       "premature": {l: int((chosen == i).sum()) for i, l in enumerate(layers)},
                       "changed": int((pred != final_pred[te]).sum())}
    return out
