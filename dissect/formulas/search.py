"""Formula search for one unit: beam search with bounds that prune, its naive reference, and an
exhaustive search over a bounded vocabulary.

    prob = Problem.build(index, img, pix)                 # a unit's active pixels, one subset
    best, stats = beam_search(prob, length=3, beam=5)     # best: Scored(formula, iou, size, inter)
    best, stats = beam_search(prob, 3, 5, prune=False)    # naive compexp beam (same answer)
    exact = exhaustive(prob, vocab=[...], length=3)       # every left-deep formula over vocab

IoU of a formula F against the unit's active pixels M over the subset's images:
|F∩M| / (|F| + |M| − |F∩M|). The beam follows compexp (Mu & Andreas): round 1 scores every
concept and keeps the best `beam`; each later round extends every formula of the previous
length with OR / AND / AND NOT and every concept not yet in it, and keeps the best `beam` of
old and new. Ties go to the shorter formula, then the lower concept columns. Formulas equal up
to commutativity count once.

Pruning never changes the answer. For a candidate F op c, with m = |M|, s = sizes and i =
intersections with M, a bound from the four numbers |F|, |F∩M|, |c|, |c∩M| rules most
candidates out before any pixel is read:
    OR:      (i_F + i_c) / (m + max(s_F − i_F, s_c − i_c))
    AND:     min(i_F, i_c) / m
    AND NOT: i_F / (m + max(0, (s_F − i_F) − (s_c − i_c)))
The survivors get |F∩c∩M| from the active pixels alone (a bincount), which gives the exact
intersection and a tighter bound; only the candidates that still might enter the beam need
|F∩c| over all pixels (packed masks, popcount; cached per formula across units).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dissect.formulas.grammar import AND, AND_NOT, OR, Formula, canonical, concepts_of

OPS = (OR, AND, AND_NOT)


@dataclass(frozen=True)
class Scored:
    formula: Formula
    iou: float
    size: int          # |F| over the subset
    inter: int         # |F ∩ M|

    @property
    def key(self) -> tuple:
        return (-self.iou, len(self.formula), self.formula)


@dataclass
class SearchStats:
    naive: int = 0          # formula IoUs the naive beam computes
    bounded: int = 0        # candidates left after the pixel-free bound
    exact: int = 0          # formula IoUs computed (needed |F ∩ c| over all pixels)
    pixel_passes: int = 0   # |F ∩ c| vectors computed from packed masks (not cached)

    def add(self, other: "SearchStats") -> None:
        for k in ("naive", "bounded", "exact", "pixel_passes"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class Problem:
    """One unit's active pixels over one image subset, with every concept's counts."""
    index: object                 # LabelIndex
    subset: np.ndarray | None     # bool [N] or None (all images)
    subset_key: object
    m: int                        # |M|
    s: np.ndarray                 # int64 [C] |c| over the subset
    i: np.ndarray                 # int64 [C] |c ∩ M|
    pm_row: np.ndarray            # (active pixel, concept) pairs, sorted by concept
    pm_con: np.ndarray
    con_start: np.ndarray = field(repr=False, default=None)
    img: np.ndarray = field(repr=False, default=None)   # active pixels' images

    @classmethod
    def build(cls, index, img: np.ndarray, pix: np.ndarray, subset: np.ndarray | None = None,
              subset_key=None, sizes: np.ndarray | None = None, pairs=None) -> "Problem":
        """`img`, `pix`: the unit's active pixels (all images); `subset`: images to count."""
        img, pix = np.asarray(img, np.int64), np.asarray(pix, np.int64)
        if subset is not None:
            keep = subset[img]
            if pairs is not None:
                row_map = np.cumsum(keep) - 1
                ok = keep[pairs[0]]
                pairs = (row_map[pairs[0][ok]], pairs[1][ok])
            img, pix = img[keep], pix[keep]
        row, con = pairs if pairs is not None else index.lookup(img, pix)
        order = np.argsort(con, kind="stable")
        row, con = row[order], con[order]
        C = index.n_concepts
        s = index.sizes(subset) if sizes is None else sizes
        i = np.bincount(con, minlength=C).astype(np.int64)
        return cls(index, subset, subset_key, len(img), s, i, row, con,
                   np.searchsorted(con, np.arange(C + 1)), img)

    # -- formulas on the active pixels
    def on_m(self, f: Formula) -> np.ndarray:
        """bool [m]: where the formula holds among the active pixels."""
        v = self._leaf_m(f[0])
        for op, c in f[1:]:
            leaf = self._leaf_m(c)
            v = v | leaf if op == OR else (v & leaf if op == AND else v & ~leaf)
        return v

    def _leaf_m(self, c: int) -> np.ndarray:
        v = np.zeros(self.m, bool)
        v[self.pm_row[self.con_start[c]:self.con_start[c + 1]]] = True
        return v

    def with_m(self, fm: np.ndarray) -> np.ndarray:
        """int64 [C]: |F ∩ c ∩ M| for every concept, given F on the active pixels."""
        return np.bincount(self.pm_con[fm[self.pm_row]], minlength=len(self.s)).astype(np.int64)

    def score(self, f: Formula) -> Scored:
        """The formula's exact IoU over the subset (reads its packed mask)."""
        size = self.index.size(f, self.subset)
        inter = int(self.on_m(f).sum())
        return Scored(f, _iou(inter, size, self.m), size, inter)


def _iou(inter, size, m):
    u = size + m - inter
    return float(inter / u) if u else 0.0


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), 0.0)


class _Pool:
    """The best `beam` formulas seen so far (deduplicated up to commutativity)."""

    def __init__(self, beam: int):
        self.beam = beam
        self.items: list[Scored] = []

    def kth(self) -> float:
        return self.items[-1].iou if len(self.items) >= self.beam else -1.0

    def add(self, cands: list[Scored]) -> None:
        seen = {}
        for sc in sorted(self.items + cands, key=lambda s: s.key):
            k = canonical(sc.formula)
            if k not in seen:
                seen[k] = sc
            if len(seen) == self.beam:
                break
        self.items = list(seen.values())


def beam_search(prob: Problem, length: int = 3, beam: int = 5, prune: bool = True
                ) -> tuple[Scored | None, dict]:
    """Best formula of at most `length` concepts; (None, ...) when the unit has no active pixel.

    Returns (best, info): info["beam"] the final beam (best first), info["first"] round 1's
    beam (single concepts), info["stats"] a SearchStats.
    """
    stats = SearchStats()
    C = len(prob.s)
    if prob.m == 0 or C == 0:
        return None, {"beam": [], "first": [], "stats": stats}
    m = prob.m
    ious = _ratio(prob.i, prob.s + m - prob.i)
    stats.naive += C
    stats.bounded += C
    stats.exact += C
    pool = _Pool(beam)
    order = np.lexsort((np.arange(C), -ious))[: 4 * beam]
    pool.add([Scored((int(c),), float(ious[c]), int(prob.s[c]), int(prob.i[c])) for c in order])
    first = list(pool.items)
    for r in range(2, length + 1):
        for F in [sc for sc in pool.items if len(sc.formula) == r - 1]:
            pool.add(_extend(prob, F, pool.kth() if prune else -1.0, stats, pool.beam))
    return pool.items[0], {"beam": pool.items, "first": first, "stats": stats}


def _extend(prob: Problem, F: Scored, kth: float, stats: SearchStats, beam: int
            ) -> list[Scored]:
    """Candidates F op c that might enter the beam (all of them when kth < 0).

    Every denominator below is ≥ m > 0 (each lower bound of |F op c| is ≥ its intersection).
    """
    m, s, i = prob.m, prob.s, prob.i
    sF, iF = F.size, F.inter
    free = np.ones(len(s), bool)
    free[concepts_of(F.formula)] = False
    stats.naive += 3 * int(free.sum())
    # stage 0: no pixels
    out_c = s - i                                   # |c \ M|
    out_F = sF - iF
    alive = np.empty((3, len(s)), bool)
    alive[0] = np.minimum(iF + i, m) >= kth * (m + np.maximum(out_F, out_c))
    alive[1] = np.minimum(iF, i) >= kth * m
    alive[2] = iF >= kth * (m + np.maximum(0, out_F - out_c))
    alive &= free
    stats.bounded += int(alive.sum())
    if not alive.any():
        return []
    # stage 1: active pixels only
    iFc = prob.with_m(prob.on_m(F.formula))
    xmax = iFc + np.minimum(out_F, out_c)
    inter = np.stack([iF + i - iFc, iFc, iF - iFc])
    low = np.stack([sF + s - xmax, iFc, sF - xmax])            # least |F op c|
    alive &= inter >= kth * (low + m - inter)
    if not alive.any():
        return []
    # stage 2: |F ∩ c| over all pixels (packed masks)
    cached = (canonical(F.formula), prob.subset_key) in prob.index._inter
    x = prob.index.intersections(F.formula, prob.subset, prob.subset_key)
    stats.pixel_passes += not cached
    size = np.stack([sF + s - x, x, sF - x])
    iou = inter / (size + m - inter)
    stats.exact += int(alive.sum())
    ok = alive & (iou >= kth)
    op_i, c_i = np.nonzero(ok)
    if len(op_i) > 3 * beam:                     # only the best can enter the beam
        top = np.lexsort((c_i, op_i, -iou[op_i, c_i]))[: 3 * beam]
        op_i, c_i = op_i[top], c_i[top]
    return [Scored(F.formula + ((OPS[o], int(c)),), float(iou[o, c]), int(size[o, c]),
                   int(inter[o, c])) for o, c in zip(op_i, c_i)]


# ----------------------------------------------------------------------------- exhaustive
def _combine(op: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x | y if op == OR else (x & y if op == AND else x & ~y)


def _truth_tables() -> np.ndarray:
    """float [op1, op2, region]: ((A op1 B) op2 C) on the 8 regions r = 4A + 2B + C."""
    r = np.arange(8)
    a, b, c = (r >> 2) & 1, (r >> 1) & 1, r & 1
    t = np.zeros((3, 3, 8))
    for p in OPS:
        for q in OPS:
            t[p, q] = _combine(q, _combine(p, a, b), c) & 1
    return t


def exhaustive(prob: Problem, vocab: list[int], length: int = 3) -> Scored | None:
    """The best left-deep formula of at most `length` (≤ 3) distinct concepts from `vocab`,
    by scoring every one of them (exact, same tie-break as the beam).

    Sizes come from inclusion–exclusion over |a|, |a∩b|, |a∩b∩c| (packed-mask passes cached
    per concept pair, so units share them); intersections with the active pixels from a
    histogram of their vocabulary signatures.
    """
    vocab = sorted(dict.fromkeys(int(v) for v in vocab))
    V = len(vocab)
    if prob.m == 0 or V == 0:
        return None
    if V > 16:
        raise ValueError("exhaustive search: at most 16 concepts")
    length = min(length, 3, V)
    index, m = prob.index, prob.m
    v_arr = np.asarray(vocab)
    s = prob.s[v_arr].astype(float)
    P = np.stack([index.intersections((a,), prob.subset, prob.subset_key)[v_arr]
                  for a in vocab]).astype(float)
    # active pixels: signature histogram over the vocabulary
    sig = np.zeros(m, np.int64)
    for j, c in enumerate(vocab):
        sig[prob.pm_row[prob.con_start[c]:prob.con_start[c + 1]]] |= 1 << j
    h = np.bincount(sig, minlength=1 << V).astype(float)
    L = ((np.arange(1 << V)[None, :] >> np.arange(V)[:, None]) & 1).astype(float)
    iM = L @ h
    PM = (L * h) @ L.T
    cands: list[Scored] = []

    def best_of(inter: np.ndarray, size: np.ndarray, valid: np.ndarray, build) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):   # only where not valid
            iou = np.where(valid, inter / (size + m - inter), -1.0)
        j = int(np.argmax(iou))          # first maximum = lowest concepts and operators
        if iou.flat[j] >= 0:
            idx = np.unravel_index(j, iou.shape)
            cands.append(Scored(build(idx), float(iou.flat[j]), int(round(size.flat[j])),
                                int(round(inter.flat[j]))))

    best_of(iM, s, np.ones(V, bool), lambda i: (vocab[i[0]],))
    eye = np.eye(V, dtype=bool)
    if length >= 2:       # axes [a, op, b]
        size2 = np.stack([s[:, None] + s[None, :] - P, P, s[:, None] - P], 1)
        inter2 = np.stack([iM[:, None] + iM[None, :] - PM, PM, iM[:, None] - PM], 1)
        best_of(inter2, size2, ~eye[:, None, :].repeat(3, 1),
                lambda i: (vocab[i[0]], (OPS[i[1]], vocab[i[2]])))
    if length >= 3:       # axes [a, op1, b, op2, c]
        T = np.zeros((V, V, V))
        for x in range(V):
            for y in range(x + 1, V):
                t = index.intersections((vocab[x], (AND, vocab[y])), prob.subset,
                                        prob.subset_key)[v_arr]
                T[x, y], T[y, x] = t, t
        TM = np.einsum("as,bs,cs,s->abc", L, L, L, h)
        truth = _truth_tables()

        def regions(s1, P2, T3):
            n = np.zeros((8, V, V, V))
            n[7] = T3
            n[6] = P2[:, :, None] - T3
            n[5] = P2[:, None, :] - T3
            n[3] = P2[None, :, :] - T3
            n[4] = s1[:, None, None] - P2[:, :, None] - P2[:, None, :] + T3
            n[2] = s1[None, :, None] - P2[:, :, None] - P2[None, :, :] + T3
            n[1] = s1[None, None, :] - P2[:, None, :] - P2[None, :, :] + T3
            return np.einsum("pqr,rabc->apbqc", truth, n)

        size3, inter3 = regions(s, P, T), regions(iM, PM, TM)
        distinct = ~(eye[:, :, None] | eye[:, None, :] | eye[None, :, :])     # [a, b, c]
        valid = np.broadcast_to(distinct[:, None, :, None, :], size3.shape)
        best_of(inter3, size3, valid, lambda i: (vocab[i[0]], (OPS[i[1]], vocab[i[2]]),
                                                 (OPS[i[3]], vocab[i[4]])))
    return min(cands, key=lambda sc: sc.key) if cands else None
