"""The engine against known answers and a slow, direct implementation of the formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dissect.engine import phases
from dissect.probes.broden import BrodenProbe
from dissect.engine.config import DissectConfig
from dissect.engine.dissection import dissect
from dissect.models.registry import LoadedModel
from dissect.probes.registry import open_run_probe
from dissect.runs.folder import open_run
from dissect.probes.synthetic_broden import make_synthetic_broden


class TinyNet(nn.Module):
    """Two small convs: conv1 -> 16×16 (stride 2 from 32), conv2 -> 8×8."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = self.conv2(self.relu(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


class RedDetector(nn.Module):
    """`detector` channel 0 = 1 exactly on red pixels (at 2× down), channel 1 = noise."""

    def __init__(self):
        super().__init__()
        self.detector = nn.Identity()

    def forward(self, x):
        x = x * 0.5 + 0.5       # undo the (0.5, 0.5) normalisation below
        small = F.avg_pool2d(x, 2)
        red = ((small[:, 0] > 0.7) & (small[:, 1] < 0.35) & (small[:, 2] < 0.35)).float()
        noise = torch.sin(small.sum(1) * 13.0)
        return self.detector(torch.stack([red, noise], 1))


def loaded(model: nn.Module, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    return LoadedModel(model.eval(), "tiny", "none", ["a", "b", "c"], mean, std)


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    d = tmp_path_factory.mktemp("broden")
    make_synthetic_broden(d, n=24, image_size=32, mask_size=16, seed=1, image_format="png")
    return d


def run_cfg(broden, **kw):
    base = dict(model="tiny", layers=["conv1", "conv2"], probe=f"broden:{broden}",
                quantile=0.02, batch_size=5, workers=0, topk=4)
    base.update(kw)
    return DissectConfig(**base)


# ----------------------------------------------------------------------------- slow reference
def reference(acts: np.ndarray, probe: BrodenProbe, q: float):
    """Direct per-image, per-unit implementation of DESIGN.md's formulas (all denominators)."""
    n, k = acts.shape[:2]
    concepts = probe.concepts
    col = {int(c): i for i, c in enumerate(concepts["concept"])}
    cats = list(probe.categories)
    ccat = np.array([cats.index(c) for c in concepts["category"]])
    nc = len(col)
    T = np.array([np.quantile(acts[:, u].ravel(), 1 - q) for u in range(k)], np.float32)
    I = np.zeros((k, nc)); G = np.zeros(nc); A = np.zeros(k)
    And = np.zeros((k, len(cats))); Alite = np.zeros((k, len(cats)))
    H, W = probe.mask_size
    for i in range(n):
        item = probe[i]
        planes = [p for c in item.pixel for p in item.pixel[c]]
        scal = [int(s) for c in item.scalar for s in item.scalar[c] if int(s) in col]
        present = set()
        for p in planes:
            for lbl, cnt in zip(*np.unique(p, return_counts=True)):
                if int(lbl) in col:
                    G[col[int(lbl)]] += cnt
                    present.add(ccat[col[int(lbl)]])
        for s in scal:
            G[col[s]] += H * W
            present.add(ccat[col[s]])
        for u in range(k):
            up = F.interpolate(torch.from_numpy(acts[i, u])[None, None], size=(H, W),
                               mode="bilinear", align_corners=False)[0, 0].numpy()
            m = up > T[u]
            a = m.sum()
            A[u] += a
            touched = {ccat[col[s]] for s in scal}
            for p in planes:
                for lbl, cnt in zip(*np.unique(p[m], return_counts=True)):
                    if int(lbl) in col:
                        I[u, col[int(lbl)]] += cnt
                        touched.add(ccat[col[int(lbl)]])
            for s in scal:
                I[u, col[s]] += a
            for c in present:
                And[u, c] += a
            if a:
                for c in touched:
                    Alite[u, c] += a

    def iou(act):
        union = act + G[None] - I
        return np.where(union > 0, I / np.where(union > 0, union, 1), 0)
    return T, {"nd": iou(And[:, ccat]), "netdissect-lite": iou(Alite[:, ccat]),
               "global": iou(A[:, None].repeat(nc, 1))}


def raw_acts(lm, probe, layer, batch_size=5):
    """Raw activations, batched as the engine batches them (so BLAS rounds the same way)."""
    from dissect.models.hooks import capture
    from dissect.probes.types import probe_loader
    out = []
    for batch in probe_loader(probe, batch_size, 0):
        with torch.no_grad(), capture(lm.model, [layer]) as a:
            lm.model(lm.normalize(batch.images))
        out.append(a[layer].numpy())
    return np.concatenate(out)


@pytest.mark.parametrize("denominator", ["nd", "netdissect-lite", "global"])
def test_matches_slow_reference(broden, tmp_path, denominator):
    lm = loaded(TinyNet())
    probe = BrodenProbe(broden)
    cfg = run_cfg(broden, denominator=denominator)
    run = open_run(dissect(cfg, tmp_path / "run", lm=lm, probe=probe, progress=False))
    assert run.status == "complete"
    for layer in ("conv1", "conv2"):
        acts = raw_acts(lm, probe, layer)
        T, ious = reference(acts, probe, cfg.quantile)
        units = run.units(layer)
        np.testing.assert_array_equal(units["threshold"].to_numpy(np.float32), T)
        np.testing.assert_allclose(run.iou(layer), ious[denominator], atol=1e-6)
        assert ious[denominator].max() > 0.01     # the test has something to compare
        best = ious[denominator].argmax(1)
        names = run.concepts["name"].to_numpy()
        # labels agree wherever the best IoU is not a tie
        srt = np.sort(ious[denominator], 1)
        clear = srt[:, -1] - srt[:, -2] > 1e-9
        assert (units["label"].to_numpy()[clear] == names[best][clear]).all()


def test_thresholds_equal_numpy_quantile(broden, tmp_path):
    lm = loaded(TinyNet(3))
    probe = BrodenProbe(broden)
    for q in (0.005, 0.1, 0.37):
        cfg = run_cfg(broden, quantile=q, layers=["conv2"])
        run = open_run(dissect(cfg, tmp_path / f"q{q}", lm=lm, probe=probe, progress=False))
        acts = raw_acts(lm, probe, "conv2")
        expect = np.array([np.quantile(acts[:, u].ravel(), 1 - q) for u in range(acts.shape[1])])
        np.testing.assert_array_equal(run.thresholds("conv2"), expect.astype(np.float32))


def test_wired_unit_gets_its_concept_with_iou_one(broden, tmp_path):
    probe = BrodenProbe(broden)
    lm = loaded(RedDetector(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    red = probe.concepts.set_index("name").loc["red"]
    frac = 0.0
    for i in range(len(probe)):
        frac += (probe[i].pixel["color"] == red.concept).mean() / len(probe)
    cfg = run_cfg(broden, layers=["detector"], quantile=min(0.5, 2 * frac))
    run = open_run(dissect(cfg, tmp_path / "wired", lm=lm, probe=probe, progress=False))
    u0 = run.units("detector").iloc[0]
    assert (u0["label"], u0["category"]) == ("red", "color")
    assert u0["iou"] == pytest.approx(1.0, abs=1e-9)
    assert bool(u0["interpretable"])


def test_upsampling_equals_pil_bilinear():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 7)).astype(np.float32)
    pil = np.asarray(Image.fromarray(a, mode="F").resize((112, 112), Image.BILINEAR))
    ours = F.interpolate(torch.from_numpy(a)[None, None], size=(112, 112), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, pil, atol=1e-5)


def test_per_category_denominators(broden, tmp_path):
    """nd ≥ lite ≥ 0 per category, and global = all active pixels ≥ nd."""
    lm = loaded(TinyNet(5))
    run = open_run(dissect(run_cfg(broden, layers=["conv2"]), tmp_path / "d", lm=lm,
                           probe=BrodenProbe(broden), progress=False))
    with np.load(run.layer_dir("conv2") / "tally.npz") as t:
        act, nd, lite = t["act"], t["act_nd"], t["act_lite"]
    assert (lite <= nd).all() and (nd <= act[:, None]).all()
    cats = BrodenProbe(broden).categories
    # every image has color and scene labels: their nd denominators are all active pixels
    for cat in ("color", "scene"):
        np.testing.assert_array_equal(nd[:, cats.index(cat)], act)
    # 'part' appears only in images with cars: a strictly smaller denominator for some unit
    assert (nd[:, cats.index("part")] < act).any()


def test_several_layers_one_forward_per_image(broden, tmp_path):
    calls = []
    net = TinyNet()
    net.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    dissect(run_cfg(broden), tmp_path / "once", lm=loaded(net), probe=BrodenProbe(broden),
            progress=False)
    assert sum(calls) == 24 + 1          # every image once, plus one shape probe


class Interrupting(BrodenProbe):
    """Raises KeyboardInterrupt when item `at` is read during pass `on_pass` (0 or 1)."""
    at, on_pass, fired = 10, 0, False

    def __getitem__(self, i):
        labels_only = not self.decode_images
        if not Interrupting.fired and i == self.at and labels_only == bool(self.on_pass):
            Interrupting.fired = True
            raise KeyboardInterrupt
        return super().__getitem__(i)


@pytest.mark.parametrize("phase", [0, 1])
def test_resume_after_interruption_is_identical(broden, tmp_path, monkeypatch, phase):
    monkeypatch.setattr(phases, "CHECKPOINT_EVERY", 0.0)
    lm = loaded(TinyNet(7))
    cfg = run_cfg(broden)
    ref = open_run(dissect(cfg, tmp_path / "ref", lm=lm, probe=BrodenProbe(broden),
                           progress=False))
    Interrupting.fired, Interrupting.on_pass = False, phase
    with pytest.raises(KeyboardInterrupt):
        dissect(cfg, tmp_path / "r", lm=lm, probe=Interrupting(broden), progress=False)
    assert open_run(tmp_path / "r").status == "cancelled"
    assert (tmp_path / "r" / "cache" / f"phase{phase + 1}.pt").exists()
    run = open_run(dissect(cfg, tmp_path / "r", lm=lm, probe=Interrupting(broden),
                           progress=False))
    assert run.status == "complete"
    for layer in cfg.layers:
        np.testing.assert_array_equal(run.iou(layer), ref.iou(layer))
        assert run.units(layer).equals(ref.units(layer))
        np.testing.assert_array_equal(run.topk(layer)["indices"], ref.topk(layer)["indices"])
        np.testing.assert_array_equal(run.hist(layer)["counts"], ref.hist(layer)["counts"])


def test_failure_is_never_marked_complete(broden, tmp_path):
    class Broken(BrodenProbe):
        def __getitem__(self, i):
            if i == 13 and not self.decode_images:
                raise RuntimeError("disk went away")
            return super().__getitem__(i)
    with pytest.raises(RuntimeError):
        dissect(run_cfg(broden), tmp_path / "f", lm=loaded(TinyNet()), probe=Broken(broden),
                progress=False)
    run = open_run(tmp_path / "f")
    assert run.status == "failed" and "disk went away" in run.info["error"]
    assert not (tmp_path / "f" / "layers" / "conv1" / "units.csv").exists()


def test_ram_cache_and_float16_cache(broden, tmp_path):
    lm = loaded(TinyNet(2))
    probe = BrodenProbe(broden)
    ref = open_run(dissect(run_cfg(broden), tmp_path / "a", lm=lm, probe=probe, progress=False))
    ram = open_run(dissect(run_cfg(broden, cache="ram"), tmp_path / "b", lm=lm, probe=probe,
                           progress=False))
    np.testing.assert_array_equal(ram.iou("conv2"), ref.iou("conv2"))
    half = open_run(dissect(run_cfg(broden, cache_dtype="float16"), tmp_path / "c", lm=lm,
                            probe=probe, progress=False))
    # fp16 is approximate: documented, and close on this data
    assert np.abs(half.iou("conv2") - ref.iou("conv2")).max() < 0.05


def test_run_folder_contract(broden, tmp_path):
    run = open_run(dissect(run_cfg(broden), tmp_path / "c", lm=loaded(TinyNet()),
                           probe=BrodenProbe(broden), progress=False))
    info = run.info
    assert info["status"] == "complete" and info["format_version"] == 1
    assert info["counts"]["images"] == 24 and info["counts"]["units"] == {"conv1": 6, "conv2": 5}
    assert set(info["timings"]) >= {"forward", "tally", "write"}
    assert list(run.concepts.columns) == ["concept", "name", "category", "images", "pixels"]
    assert run.iou("conv2").shape == (5, len(run.concepts)) and run.iou("conv2").dtype == np.float32
    top = run.topk("conv2")
    assert top["indices"].shape == (5, 4) and top["maps"].shape == (5, 4, 8, 8)
    assert top["maps"].dtype == np.float32                 # the engine's values (one definition of active)
    imgmax = run.imgmax("conv2")
    assert imgmax.shape == (24, 5)
    np.testing.assert_allclose(top["values"][:, 0], imgmax.max(0))
    assert run.acts("conv2").shape == (24, 5, 8, 8) and run.acts("conv2").dtype == np.float32
    assert run.hist("conv2")["counts"].sum(1).tolist() == [24 * 64] * 5
    assert list(run.images.columns)[:5] == ["index", "path", "split", "width", "height"]
    assert not (tmp_path / "c" / "cache").exists()
    assert len(open_run_probe(run)) == 24
