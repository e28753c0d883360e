"""Mergeable statistics: exact against numpy, and shards combine exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dissect.engine.stats import Histogram, IoUTally, MinMax, TailQuantile, TopK
from dissect.engine.tally import BatchLabels, tally_batch


def test_tail_quantile_equals_numpy_quantile():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n_img = int(rng.integers(3, 40))
        acts = rng.standard_normal((n_img, 4, 5, 3)).astype(np.float32)
        acts[:, 1] = np.round(acts[:, 1])            # many ties
        q = float(rng.choice([0.005, 0.01, 0.2, 0.5, 0.9]))
        tq = TailQuantile(4, q, total=n_img * 15)
        for i in range(0, n_img, 7):
            tq.add(torch.from_numpy(acts[i:i + 7]))
        expect = [np.quantile(acts[:, k].ravel(), 1 - q) for k in range(4)]
        np.testing.assert_array_equal(tq.readout(), np.array(expect, np.float32))


def test_tail_quantile_keeps_bounded_memory():
    tq = TailQuantile(2, 0.01, total=100_000)
    for _ in range(10):
        tq.add(torch.randn(1000, 2, 10))   # 1000 images × 2 units × 10 values
    assert tq.top.shape[1] <= 0.01 * 100_000 + 2


def test_shards_merge_exactly():
    rng = np.random.default_rng(1)
    acts = torch.from_numpy(rng.standard_normal((20, 3, 4, 4)).astype(np.float32))
    whole = [TailQuantile(3, 0.05, 20 * 16), MinMax(3), TopK(3, 5)]
    a = [TailQuantile(3, 0.05, 20 * 16), MinMax(3), TopK(3, 5)]
    b = [TailQuantile(3, 0.05, 20 * 16), MinMax(3), TopK(3, 5)]
    idx = torch.arange(20)
    for s, part in ((whole, slice(0, 20)), (a, slice(0, 11)), (b, slice(11, 20))):
        s[0].add(acts[part]); s[1].add(acts[part]); s[2].add(acts[part].amax((2, 3)), idx[part])
    for x, y in zip(a, b):
        # merge through a state_dict round trip, as a distributed run would
        z = type(y).__new__(type(y))
        z.__dict__.update(y.__dict__)
        z.load_state_dict(y.state_dict())
        x.merge(z)
    np.testing.assert_array_equal(a[0].readout(), whole[0].readout())
    assert torch.equal(a[1].min, whole[1].min) and torch.equal(a[1].max, whole[1].max)
    assert torch.equal(a[2].indices, whole[2].indices) and torch.equal(a[2].values, whole[2].values)


def test_histogram_counts_every_value_and_merges():
    v = torch.randn(10, 2, 3, 3)
    mm = MinMax(2)
    mm.add(v)
    h1, h2, h = (Histogram.from_range(mm.min, mm.max, 8) for _ in range(3))
    h.add(v)
    h1.add(v[:4]); h2.add(v[4:])
    h1.merge(h2)
    assert torch.equal(h1.counts, h.counts) and h.counts.sum().item() == 2 * 90
    np.testing.assert_array_equal(h.counts[0].numpy(), np.histogram(
        v[:, 0].numpy().ravel(), bins=h.edges[0].numpy())[0])


def test_iou_tally_shards_merge_exactly():
    rng = np.random.default_rng(2)
    acts = torch.from_numpy(rng.standard_normal((12, 4, 3, 3)).astype(np.float32))
    cols = torch.from_numpy(rng.integers(-1, 5, size=(12, 2, 9, 9)))
    scal = torch.from_numpy(rng.integers(5, 7, size=(12, 1)))
    cc = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    th = torch.full((4,), 1.0)

    def tally(sl):
        t = IoUTally(4, 7, 3)
        t.add(tally_batch(acts[sl], th, BatchLabels(cols[sl], scal[sl]), cc, 3))
        return t
    whole, a, b = tally(slice(0, 12)), tally(slice(0, 5)), tally(slice(5, 12))
    a.merge(b)
    for f in IoUTally._fields:
        assert torch.equal(getattr(a, f), getattr(whole, f)), f
    for den in ("nd", "netdissect-lite", "global"):
        np.testing.assert_array_equal(a.iou(cc.numpy(), den), whole.iou(cc.numpy(), den))
    with pytest.raises(ValueError, match="unknown denominator"):
        whole.iou(cc.numpy(), "other")


def dense_tally(acts, th, labels, cc, n_cat):
    """Every pair upsampled in full with F.interpolate: the direct computation."""
    import torch.nn.functional as F
    b, k = acts.shape[:2]
    H, W = labels.cols.shape[-2:]
    C = len(cc)
    up = F.interpolate(acts, size=(H, W), mode="bilinear", align_corners=False)
    act = up > th[None, :, None, None]                                  # B×K×H×W
    inter = torch.zeros(k, C, dtype=torch.int64)
    for i in range(b):
        for p in range(labels.cols.shape[1]):
            onehot = torch.nn.functional.one_hot(labels.cols[i, p].long() + 1, C + 1)[..., 1:]
            inter += torch.einsum("khw,hwc->kc", act[i].long(), onehot)
        for s in labels.scalars[i]:
            if s >= 0:
                inter[:, s] += act[i].sum((1, 2))
    return inter, act.sum((0, 2, 3))


@pytest.mark.parametrize("h,size", [(7, 112), (7, 50), (14, 56), (13, 40)])
def test_cell_tally_equals_full_upsample(h, size):
    g = torch.Generator().manual_seed(h * size)
    acts = torch.randn(6, 9, h, h, generator=g).relu()
    th = torch.quantile(acts.transpose(0, 1).reshape(9, -1), 0.97, dim=1)
    cols = torch.randint(-1, 6, (6, 2, size // 4, size // 4), generator=g)
    cols = torch.nn.functional.interpolate(cols[:, :, None].float().flatten(1, 2), size=(size, size),
                                           mode="nearest").long().view(6, 2, size, size)
    labels = BatchLabels(cols.int(), torch.randint(6, 8, (6, 1), generator=g))
    cc = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    inc = tally_batch(acts, th, labels, cc, 4)
    inter, act = dense_tally(acts, th, labels, cc, 4)
    assert act.sum() > 0
    assert torch.equal(inc["act"], act)
    assert torch.equal(inc["inter"], inter)
