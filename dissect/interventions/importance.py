"""Unit importance per class: remove each unit alone, measure the drop; then the PNAS control.

    imp = rank_units(lm, lset, "layer4")            # every unit of layer4 removed alone
    imp.top("beach", 10)                             # the 10 units whose removal hurts beach most
    imp.table("beach")                               # unit, balanced_drop, acc_drop, logit_drop
    imp.losses(17)                                   # the classes that lose most without unit 17
    curve = control_curve(lm, lset, imp, [1, 2, 5, 10, 20])   # remove top-N vs keep only top-N

The layer's activations are computed once. When what follows the layer is a global (average or
max) pool and a linear classifier (ResNet, the ToyWorld CNN), removing unit k changes the logits by
(new_k - pooled_k) * W[:, k], exactly, so all units are ranked in closed form (checked against a
real re-run first). Any other suffix is re-run per unit from the cached prefix (dissect.interventions.replay).
Balanced accuracy of class c is (recall + true-negative rate) / 2 over the whole set (PNAS 2020).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from dissect.interventions.ablation import Intervention, ablate, invert
from dissect.errors import AblationError
from dissect.models.hooks import capture
from dissect.interventions.labelled import LabelledSet, norm_name
from dissect.models.registry import LoadedModel
from dissect.interventions.replay import Replay


@dataclass
class PoolLinear:
    """The suffix `linear(pool(a))` with pool = global "avg" or "max"."""
    pool: str
    weight: torch.Tensor     # [C, K]
    bias: torch.Tensor       # [C]

    def pooled(self, a: torch.Tensor) -> torch.Tensor:
        return a.mean((2, 3)) if self.pool == "avg" else a.amax((2, 3))

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled @ self.weight.T + self.bias

    def edited(self, pooled: torch.Tensor, iv: Intervention) -> torch.Tensor:
        """Pooled values after `iv` (single layer), or None when no closed form exists."""
        p = pooled.clone()
        idx = list(iv.units)
        if iv.mode == "zero":
            p[:, idx] = 0
        elif iv.mode == "value":
            p[:, idx] = iv.value
        elif iv.mode == "mean":
            p[:, idx] = iv.means.to(p)[idx]
        elif iv.mode == "scale" and (self.pool == "avg" or iv.value >= 0):
            p[:, idx] = p[:, idx] * iv.value
        else:
            return None
        return p


def find_pool_linear(model: nn.Module, acts: torch.Tensor, logits: torch.Tensor) -> PoolLinear | None:
    """A PoolLinear that reproduces `logits` from the layer's `acts`, or None."""
    if acts.dim() != 4:
        return None
    k = acts.shape[1]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == k]
    if not linears:
        return None
    lin = linears[-1]
    w = lin.weight.detach().float()
    b = lin.bias.detach().float() if lin.bias is not None else torch.zeros(lin.out_features)
    for pool in ("avg", "max"):
        pl = PoolLinear(pool, w.to(acts.device), b.to(acts.device))
        guess = pl.logits(pl.pooled(acts.float()))
        if guess.shape == logits.shape and torch.allclose(guess, logits.float(), rtol=1e-3, atol=1e-3):
            return pl
    return None


@dataclass
class Importance:
    layer: str
    mode: str
    class_names: list[str]         # model class names
    classes: list[int]             # model class indices present in the set (rows below)
    balanced_drop: np.ndarray      # [len(classes), K]
    acc_drop: np.ndarray           # [len(classes), K]
    logit_drop: np.ndarray         # [len(classes), K]
    fast: bool                     # closed form (pool + linear suffix) or re-run per unit
    baseline: pd.DataFrame         # class, index, n, acc, balanced (no intervention)

    def row(self, cls) -> int:
        if isinstance(cls, (int, np.integer)):
            c = int(cls)
        else:
            idx = class_index_names(self.class_names)
            if norm_name(cls) not in idx:
                raise AblationError(f"class '{cls}' is not a class of the model; e.g. "
                                    f"{', '.join(self.class_names[:5])}")
            c = idx[norm_name(cls)]
        if c not in self.classes:
            raise AblationError(f"class '{self.class_names[c]}' has no images in this set")
        return self.classes.index(c)

    def ranking(self, cls, by: str = "balanced") -> np.ndarray:
        """Units, most important first (ties broken by the logit drop)."""
        r = self.row(cls)
        primary = {"balanced": self.balanced_drop, "acc": self.acc_drop, "logit": self.logit_drop}[by][r]
        return np.lexsort((-self.logit_drop[r], -primary))

    def top(self, cls, n: int = 10, by: str = "balanced") -> list[int]:
        return [int(u) for u in self.ranking(cls, by)[:n]]

    def losses(self, unit: int, n: int = 10) -> pd.DataFrame:
        """What the network loses without `unit`: the `n` classes whose accuracy (recall) drops
        most when it alone is removed (ties: balanced-accuracy drop, then logit drop), with
        class, n, acc (before), acc_drop, balanced_drop, logit_drop."""
        k = self.acc_drop.shape[1]
        if not 0 <= int(unit) < k:
            raise AblationError(f"unit {unit} is out of range for layer '{self.layer}': it has "
                                f"{k} units, numbered 0-{k - 1}")
        u = int(unit)
        order = np.lexsort((-self.logit_drop[:, u], -self.balanced_drop[:, u], -self.acc_drop[:, u]))
        b = self.baseline.iloc[order]
        return pd.DataFrame({"class": b["class"].to_numpy(), "n": b["n"].to_numpy(),
                             "acc": b["acc"].to_numpy(), "acc_drop": self.acc_drop[order, u],
                             "balanced_drop": self.balanced_drop[order, u],
                             "logit_drop": self.logit_drop[order, u]}).head(n)

    def table(self, cls, by: str = "balanced") -> pd.DataFrame:
        r = self.row(cls)
        order = self.ranking(cls, by)
        return pd.DataFrame({"unit": order, "balanced_drop": self.balanced_drop[r, order],
                             "acc_drop": self.acc_drop[r, order],
                             "logit_drop": self.logit_drop[r, order]})


def class_index_names(names: Sequence[str]) -> dict[str, int]:
    return {norm_name(n): i for i, n in reversed(list(enumerate(names)))}


def _balanced(labels: np.ndarray, pred: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(recall [C, ...], balanced [C, ...]) for pred [N, ...] (vectorised over trailing dims)."""
    rec, bal = [], []
    for c in classes:
        pos = labels == c
        hit = pred == c
        recall = hit[pos].mean(0)
        tnr = (~hit[~pos]).mean(0) if (~pos).any() else np.ones_like(recall)
        rec.append(recall)
        bal.append((recall + tnr) / 2)
    return np.asarray(rec, np.float64), np.asarray(bal, np.float64)


@torch.no_grad()
def rank_units(lm: LoadedModel, lset: LabelledSet, layer: str, mode: str = "zero",
               value: float = 0.0, means: torch.Tensor | None = None, batch_size: int = 32,
               chunk: int = 32, force_generic: bool = False,
               progress: Callable[[int, int], None] | None = None) -> Importance:
    """Remove each unit of `layer` alone; per class, the drop in balanced accuracy, accuracy
    (recall) and true-class logit. `progress(done, total)` is called between steps (images of
    the first pass, then units x images of the per-unit replays; it may raise to stop)."""
    tell = progress or (lambda done, total: None)
    model = lm.model
    acts_list, logits_list = [], []
    for _idx, x01 in lset.batches(batch_size):
        tell(sum(len(a) for a in logits_list), len(lset))
        with capture(model, [layer]) as acts:
            logits_list.append(model(lm.normalize(x01.to(lm.device))).float())
        if layer not in acts:
            raise AblationError(f"layer '{layer}' did not run in a forward pass of {lm.name}")
        acts_list.append(acts[layer])
    a, logits = torch.cat(acts_list), torch.cat(logits_list)
    labels = lset.labels
    k = a.shape[1]
    y = torch.as_tensor(labels, device=logits.device)
    pl = None if force_generic else find_pool_linear(model, a, logits)
    probe_iv = Intervention(layer, (0, k // 2), mode, value, means)
    if pl is not None and pl.edited(pl.pooled(a[:1]), probe_iv) is not None:
        # check the closed form against a real re-run on a few images, with this very mode
        rp = Replay(model, [layer])
        x = lm.normalize(torch.stack([lset.load(i) for i in range(min(4, len(lset)))]).to(lm.device))
        rp.record(x)
        with ablate(model, [probe_iv]):
            real = rp.run().float()
        guess = pl.logits(pl.edited(pl.pooled(a[: len(x)].float()), probe_iv))
        if not torch.allclose(real, guess, rtol=1e-3, atol=1e-3):
            pl = None
    else:
        pl = None
    n = len(labels)
    pred = np.zeros((n, k), np.int64)
    true_logit = np.zeros((n, k), np.float64)
    if pl is not None:
        pooled = pl.pooled(a.float())
        new = pl.edited(pooled, Intervention(layer, tuple(range(k)), mode, value, means))
        delta = new - pooled                                  # [N, K]
        base = logits
        w = pl.weight                                        # [C, K]
        true_logit[:] = (base.gather(1, y[:, None]) + delta * w[y]).cpu().numpy()
        for s in range(0, k, chunk):
            d = delta[:, s:s + chunk]                          # [N, c]
            out = base[:, None, :] + d[:, :, None] * w[:, s:s + chunk].T[None]   # [N, c, C]
            pred[:, s:s + chunk] = out.argmax(2).cpu().numpy()
    else:
        start = 0
        for _idx, x01 in lset.batches(batch_size):
            rp = Replay(model, [layer])
            rp.record(lm.normalize(x01.to(lm.device)))
            rows = slice(start, start + len(x01))
            yb = y[rows]
            for u in range(k):
                tell(start * k + u * len(x01), n * k)
                with ablate(model, [Intervention(layer, (u,), mode, value, means)]):
                    out = rp.run().float()
                pred[rows, u] = out.argmax(1).cpu().numpy()
                true_logit[rows, u] = out.gather(1, yb[:, None])[:, 0].cpu().numpy()
            start += len(x01)
    return tabulate(lm, layer, mode, labels, y, logits, pred, true_logit, pl is not None)


def tabulate(lm, layer: str, mode: str, labels: np.ndarray, y: torch.Tensor,
             logits: torch.Tensor, pred: np.ndarray, true_logit: np.ndarray,
             exact: bool) -> Importance:
    """An Importance from the clean `logits` [N, classes] and, per image and ablated unit (or
    feature), the prediction `pred` [N, K] and the true class's logit `true_logit` [N, K]."""
    base_pred = logits.argmax(1).cpu().numpy()
    base_true = logits.gather(1, y[:, None])[:, 0].cpu().numpy()
    classes = sorted(set(labels.tolist()))
    rec0, bal0 = _balanced(labels, base_pred, classes)
    rec, bal = _balanced(labels, pred, classes)
    drop = base_true[:, None] - true_logit
    logit_drop = np.stack([drop[labels == c].mean(0) for c in classes])
    baseline = pd.DataFrame({"class": [lm.class_names[c] for c in classes], "index": classes,
                             "n": [int((labels == c).sum()) for c in classes],
                             "acc": rec0, "balanced": bal0})
    return Importance(layer, mode, list(lm.class_names), classes, bal0[:, None] - bal,
                      rec0[:, None] - rec, logit_drop, exact, baseline)


@torch.no_grad()
def control_curve(lm: LoadedModel, lset: LabelledSet, imp: Importance, ns: Sequence[int],
                  value: float = 0.0, means: torch.Tensor | None = None,
                  batch_size: int = 32, by: str = "balanced",
                  progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Mean balanced accuracy over classes when removing each class's top-N units vs keeping only
    them (removing the other K-N), for each N in `ns` (PNAS 2020, Fig. 4). `progress(done,
    total)` is called before each of the 2 x len(ns) x classes evaluations (it may raise)."""
    from dissect.interventions.labelled import SetCache
    k = imp.balanced_drop.shape[1]
    labels = lset.labels
    cache = SetCache(lm, lset, [imp.layer], batch_size)
    rows = []
    for n in ns:
        n = int(min(n, k))
        removed, kept = [], []
        for r, c in enumerate(imp.classes):
            if progress:
                progress(2 * (len(rows) * len(imp.classes) + r), 2 * len(ns) * len(imp.classes))
            top = tuple(imp.top(c, n, by=by))
            iv = Intervention(imp.layer, top, imp.mode, value, means)
            for ivs, sink in (([iv], removed), ([invert(iv, k)], kept)):
                pred = cache.evaluate(ivs).pred_after
                _, bal = _balanced(labels, pred, [c])
                sink.append(float(bal[0]))
        rows.append({"n": n, "removed_top": float(np.mean(removed)),
                     "kept_top_only": float(np.mean(kept)),
                     "baseline": float(imp.baseline["balanced"].mean())})
    return pd.DataFrame(rows)
