"""Mergeable streaming statistics: exact per-unit quantiles, top-k, histograms, IoU tallies.

    q = TailQuantile(units=512, q=0.005, total=n_values_per_unit)
    for acts in batches: q.add(acts)            # acts: B×K×h×w (or K×n)
    t = q.readout()                             # == np.quantile(all values of unit k, 1 - q)
    q.merge(other_shard)                        # shards combine exactly
    q.load_state_dict(q.state_dict())           # save / resume

Every statistic has `add`, `state_dict`, `load_state_dict` and `merge` (as baukit's
runningstats), so caching, resuming and distributing are the same operation: save, load, merge.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["TailQuantile", "MinMax", "Histogram", "TopK", "IoUTally", "as_units_by_values"]


def as_units_by_values(x: torch.Tensor) -> torch.Tensor:
    """B×K×h×w (or B×K) -> K×(B·h·w): one row of values per unit."""
    if x.dim() == 2:
        return x.t()
    return x.transpose(0, 1).reshape(x.shape[1], -1)


class _Stat:
    _fields: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        return {f: (v.clone() if torch.is_tensor(v) else v)
                for f in self._fields for v in [getattr(self, f)]}

    def load_state_dict(self, state: dict) -> None:
        for f in self._fields:
            setattr(self, f, state[f])


class TailQuantile(_Stat):
    """Exact per-unit quantile `np.quantile(values, 1 - q)` (linear), kept in bounded memory.

    Only the order statistics at and above rank floor((total-1)(1-q)) matter, so each unit keeps
    its top `total - floor((total-1)(1-q)) + 1` values. `total` is the number of values each unit
    will have seen in the end (images × h × w); shards of one run share it.
    """

    _fields = ("q", "total", "count", "top")

    def __init__(self, units: int, q: float, total: int):
        if not 0 < q < 1:
            raise ValueError(f"quantile must be in (0, 1), got {q}")
        self.q, self.total = float(q), int(total)
        lo = int(math.floor((self.total - 1) * (1.0 - self.q)))
        self.capacity = max(2, self.total - lo + 1)
        self.count = 0
        self.top = torch.full((units, 0), -math.inf, dtype=torch.float32)
        self._pending: list[torch.Tensor] = []
        self._pending_n = 0

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._pending, self._pending_n = [], 0
        lo = int(math.floor((self.total - 1) * (1.0 - self.q)))
        self.capacity = max(2, self.total - lo + 1)

    def _keep(self, values: torch.Tensor) -> None:
        m = min(self.capacity, values.shape[1])
        self.top = torch.topk(values, m, dim=1, sorted=True).values.contiguous()

    def add(self, acts: torch.Tensor) -> None:
        """Add B×K×h×w activations (or B×K: one value per unit per sample)."""
        v = as_units_by_values(acts.float()).cpu()
        self.count += v.shape[1]
        if self.top.shape[1] >= self.capacity:      # only values above the kept floor matter
            most = int((v > self.top[:, -1:]).sum(1).max())
            if most == 0:
                return
            if most < v.shape[1]:                   # each unit's candidates are its top `most`
                v = torch.topk(v, most, dim=1, sorted=False).values
        self._pending.append(v)
        self._pending_n += v.shape[1]
        # compact when the pending candidates could fill the buffer (amortised O(capacity))
        if self.top.shape[1] < self.capacity or self._pending_n >= self.capacity:
            self._compact()

    def _compact(self) -> None:
        if self._pending:
            self._keep(torch.cat([self.top] + self._pending, dim=1))
            self._pending, self._pending_n = [], 0

    def state_dict(self) -> dict:
        self._compact()
        return super().state_dict()

    def merge(self, other: "TailQuantile") -> None:
        if (other.q, other.total) != (self.q, self.total):
            raise ValueError("TailQuantile shards must share q and total")
        self._compact()
        other._compact()
        self.count += other.count
        self._keep(torch.cat([self.top, other.top], dim=1))

    def readout(self) -> np.ndarray:
        """float32 [K]: each unit's exact (1 - q) quantile over all `count` values."""
        self._compact()
        n = self.count
        if n == 0:
            raise ValueError("no values added")
        v = (n - 1) * (1.0 - self.q)
        lo = int(math.floor(v))
        hi = min(lo + 1, n - 1)
        gamma = v - lo
        top = self.top.numpy()
        need = n - 1 - lo
        if need >= top.shape[1]:
            raise ValueError(f"TailQuantile saw {n} values but was sized for {self.total}")
        a, b = top[:, n - 1 - lo], top[:, n - 1 - hi]
        # numpy's own interpolation on the two neighbours gives np.quantile's exact value
        return np.quantile(np.stack([a, b], axis=1), gamma, axis=1).astype(np.float32)


class MinMax(_Stat):
    """Per-unit min and max."""

    _fields = ("min", "max")

    def __init__(self, units: int):
        self.min = torch.full((units,), math.inf)
        self.max = torch.full((units,), -math.inf)

    def add(self, acts: torch.Tensor) -> None:
        v = as_units_by_values(acts.float())
        self.min = torch.minimum(self.min, v.amin(1).cpu())
        self.max = torch.maximum(self.max, v.amax(1).cpu())

    def merge(self, other: "MinMax") -> None:
        self.min = torch.minimum(self.min, other.min)
        self.max = torch.maximum(self.max, other.max)


class Histogram(_Stat):
    """Per-unit histogram over fixed per-unit edges [K, B+1] (the last bin includes its edge)."""

    _fields = ("edges", "counts")

    def __init__(self, edges: torch.Tensor):
        self.edges = edges.float()
        self.counts = torch.zeros(edges.shape[0], edges.shape[1] - 1, dtype=torch.int64)

    @classmethod
    def from_range(cls, lo: torch.Tensor, hi: torch.Tensor, bins: int = 64) -> "Histogram":
        lo, hi = lo.float(), hi.float()
        hi = torch.where(hi > lo, hi, lo + 1e-6)
        steps = torch.linspace(0, 1, bins + 1)
        return cls(lo[:, None] + (hi - lo)[:, None] * steps[None, :])

    def add(self, acts: torch.Tensor) -> None:
        v = as_units_by_values(acts.float()).cpu()
        k, bins = self.counts.shape
        lo, hi = self.edges[:, :1], self.edges[:, -1:]
        idx = ((v - lo) / (hi - lo) * bins).floor().clamp_(0, bins - 1).long()
        idx += torch.arange(k)[:, None] * bins
        self.counts += torch.bincount(idx.reshape(-1), minlength=k * bins).view(k, bins)

    def merge(self, other: "Histogram") -> None:
        if not torch.equal(self.edges, other.edges):
            raise ValueError("Histogram shards must share edges")
        self.counts += other.counts


class TopK(_Stat):
    """Per-unit top-k images by a per-image score (e.g. max activation); ties keep lower index."""

    _fields = ("k", "values", "indices")

    def __init__(self, units: int, k: int):
        self.k = int(k)
        self.values = torch.full((units, 0), -math.inf)
        self.indices = torch.zeros((units, 0), dtype=torch.int64)

    def _keep(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        # sort by value desc, then index asc: stable sort on index first, then on value
        order = torch.argsort(indices, dim=1, stable=True)
        values, indices = values.gather(1, order), indices.gather(1, order)
        order = torch.argsort(values, dim=1, descending=True, stable=True)[:, : self.k]
        self.values, self.indices = values.gather(1, order), indices.gather(1, order)

    def add(self, scores: torch.Tensor, index: torch.Tensor) -> None:
        """scores: B×K per-image scores; index: B image indices."""
        s = scores.float().t().cpu()
        i = index.cpu().long()[None, :].expand_as(s)
        self._keep(torch.cat([self.values, s], 1), torch.cat([self.indices, i], 1))

    def merge(self, other: "TopK") -> None:
        self._keep(torch.cat([self.values, other.values], 1),
                   torch.cat([self.indices, other.indices], 1))


class IoUTally(_Stat):
    """Integer tallies behind every IoU variant, per unit k and concept column c.

    - `inter` [K, C]: active pixels of k carrying c (summed over planes; image-level labels
      cover the whole image);
    - `truth` [C]: pixels carrying c; `images` [C]: images containing c;
    - `act` [K]: all active pixels of k (denominator `global`);
    - `act_nd` [K, cats]: active pixels of k in images containing a label of the category (`nd`);
    - `act_lite` [K, cats]: active pixels of k in images where k's active pixels touch a label of
      the category, or the category has an image-level label there (`netdissect-lite`).
    """

    _fields = ("inter", "truth", "images", "act", "act_nd", "act_lite")

    def __init__(self, units: int, concepts: int, categories: int):
        z = lambda *s: torch.zeros(*s, dtype=torch.int64)  # noqa: E731
        self.inter, self.truth, self.images = z(units, concepts), z(concepts), z(concepts)
        self.act, self.act_nd, self.act_lite = z(units), z(units, categories), z(units, categories)

    def add(self, inc: dict[str, torch.Tensor]) -> None:
        """Add increments (same keys and shapes as the fields), e.g. from `tally_batch`."""
        for f in self._fields:
            if f in inc:
                getattr(self, f).add_(inc[f].to(torch.int64).cpu())

    def merge(self, other: "IoUTally") -> None:
        self.add({f: getattr(other, f) for f in self._fields})

    def iou(self, concept_category: np.ndarray, denominator: str = "nd") -> np.ndarray:
        """float64 [K, C]: IoU = I / (A(k, cat(c)) + G(c) - I), 0 where the union is 0."""
        inter = self.inter.double().numpy()
        cc = np.asarray(concept_category, dtype=np.int64)
        if denominator == "global":
            act = self.act.double().numpy()[:, None].repeat(len(cc), 1)
        elif denominator == "nd":
            act = self.act_nd.double().numpy()[:, cc]
        elif denominator == "netdissect-lite":
            act = self.act_lite.double().numpy()[:, cc]
        else:
            raise ValueError(f"unknown denominator '{denominator}': use nd, netdissect-lite "
                             "or global")
        union = act + self.truth.double().numpy()[None, :] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
