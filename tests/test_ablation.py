"""Interventions, prefix replay, one-image comparison, labelled sets, unit importance."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dissect.interventions.ablation import (ImageAblation, Intervention, ablate, check_units, edits_for,
                              image_tensor, invert, means_from_acts, open_image, parse_mode,
                              parse_units, unit_means)
from dissect.errors import AblationError
from dissect.errors import LayerNotFound
from dissect.models.hooks import intervene
from dissect.interventions.importance import control_curve, rank_units
from dissect.interventions.labelled import evaluate_set, open_labelled_set
from dissect.models.registry import LoadedModel, load_model
from dissect.interventions.replay import Replay

torch.set_num_threads(1)


def _tiny(pool="avg", classes=3) -> LoadedModel:
    torch.manual_seed(0)
    pooling = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                        pooling, nn.Flatten(), nn.Linear(16, classes)).eval()
    return LoadedModel(net, "tiny", "none", ["red", "green", "blue_sky"][:classes],
                       (0.5,) * 3, (0.25,) * 3, input_size=32)


def test_modes_edit_the_chosen_units_only():
    out = torch.randn(2, 5, 3, 3)
    means = torch.arange(5.0)
    cases = {"zero": lambda o: 0 * o, "value": lambda o: 0 * o + 2.5, "scale": lambda o: 3 * o,
             "mean": lambda o: 0 * o + means[[1, 3]].view(1, 2, 1, 1)}
    for mode, expect in cases.items():
        iv = Intervention("l", (1, 3), mode, {"value": 2.5, "scale": 3.0}.get(mode, 0.0), means)
        new = iv.apply(out)
        assert torch.allclose(new[:, [1, 3]], expect(out[:, [1, 3]]))
        assert torch.equal(new[:, [0, 2, 4]], out[:, [0, 2, 4]])
    assert invert(Intervention("l", (1, 3)), 5).units == (0, 2, 4)


def test_parsers_and_bad_values():
    assert parse_mode("scale=0.5") == ("scale", 0.5) and parse_mode("zero") == ("zero", 0.0)
    assert parse_units("3,17,40-42") == [3, 17, 40, 41, 42]
    for bad in ("scale", "value=x", "half"):
        with pytest.raises(AblationError):
            parse_mode(bad)
    with pytest.raises(AblationError):
        parse_units("a,b")
    # a shared link's huge range is refused at once, not expanded into memory
    import time
    t = time.monotonic()
    for bad, why in (("1-999999999", "out of range"), ("5-3", "out of range"),
                     ("-2", "out of range"), ("0-511,0-511,0-1", "more units")):
        with pytest.raises(AblationError, match=why):
            parse_units(bad, 512)
    with pytest.raises(AblationError, match="numbered 0-511"):
        parse_units("512", 512)
    with pytest.raises(AblationError, match="out of range"):
        parse_units("0-99999999999")
    assert time.monotonic() - t < 1
    assert parse_units("0-511", 512) == list(range(512))
    with pytest.raises(AblationError, match="means"):
        Intervention("l", (1,), "mean")


def test_unit_out_of_range_and_unknown_layer():
    lm = load_model("resnet18", "none")
    with pytest.raises(AblationError, match="0-511"):
        check_units(lm, "layer4", [512])
    with pytest.raises(LayerNotFound, match="layer4"):
        check_units(lm, "layer5", [1])


def test_several_layers_and_units_at_once():
    lm = _tiny()
    x = torch.rand(2, 3, 32, 32)
    ivs = [Intervention("0", (1, 2)), Intervention("2", (5,), "scale", -1.0),
           Intervention("2", (6,), "value", 4.0)]
    with ablate(lm.model, ivs), torch.no_grad():
        got = lm.model(x)
    m = lm.model
    with torch.no_grad():
        h = m[0](x)
        h[:, [1, 2]] = 0
        h = m[2](m[1](h))
        h[:, 5] *= -1
        h[:, 6] = 4.0
        ref = m[6](m[5](m[4](m[3](h))))
    assert torch.allclose(got, ref, atol=1e-6)
    assert set(edits_for(ivs)) == {"0", "2"}


@pytest.mark.parametrize("name,layer", [("resnet18", "layer4"), ("resnet18", "layer2.0.conv2"),
                                        ("resnet18", "layer4.1.relu"), ("toyworld", "conv5")])
def test_replay_matches_a_full_forward(name, layer):
    lm = load_model(name, "none")
    x = torch.randn(2, 3, 64, 64)
    rp = Replay(lm.model, [layer])
    before = rp.record(x)
    assert rp.exact
    edit = {layer: lambda o: o * 0.3 + 0.1}
    with torch.no_grad(), intervene(lm.model, edit):
        ref = lm.model(x)
    with intervene(lm.model, edit):
        got = rp.run()
    assert torch.allclose(got, ref, atol=1e-5) and not torch.allclose(before, ref)
    assert all("forward" not in m.__dict__ for m in lm.model.modules())
    with torch.no_grad():
        assert torch.allclose(lm.model(x), before, atol=1e-6)      # the model is left untouched


def test_image_ablation_compare_and_changes():
    lm = load_model("resnet18", "none")
    x = torch.rand(3, 96, 96)
    lab = ImageAblation(lm)
    iv = Intervention("layer4", tuple(range(0, 512, 2)))
    res = lab.compare(x, [iv], path="x.png")
    with ablate(lm.model, [iv]), torch.no_grad():
        ref = lm.model(lm.normalize(x[None])).softmax(1)[0]
    assert res.after[0][1] == pytest.approx(float(ref.max()), rel=1e-4)
    assert len(res.before) == 5 and res.changes
    assert all(abs(c["delta"]) >= 1e-4 for c in res.changes)
    deltas = [abs(c["delta"]) for c in res.changes]
    assert deltas == sorted(deltas, reverse=True)
    replay = lab._replay
    res2 = lab.compare(x, [Intervention("layer4", (7,), "scale", 5.0)])
    assert lab._replay is replay                       # same image and layer: prefix reused
    assert res2.before == res.before
    assert lab.compare(x, []).changes == []
    js = res.to_json()
    assert set(js) >= {"path", "before", "after"} and set(js["before"][0]) == {"class", "p"}


def test_images_bad_and_huge(tmp_path, monkeypatch):
    lm = load_model("resnet18", "none")
    txt = tmp_path / "notes.jpg"
    txt.write_text("hello")
    with pytest.raises(AblationError, match="not an image"):
        image_tensor(lm, str(txt))
    with pytest.raises(AblationError, match="does not exist"):
        open_image(str(tmp_path / "none.png"))
    big = tmp_path / "wide.png"
    Image.new("RGB", (6000, 300), (255, 0, 0)).save(big)
    img = open_image(str(big))
    assert max(img.size) <= 4096
    assert image_tensor(lm, str(big)).shape == (3, 224, 224)
    with pytest.raises(AblationError, match="limit"):
        open_image(str(big), max_pixels=1000)


def _folder(root, names, per=4, junk=True):
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for k in range(per):
            a = np.zeros((40, 40, 3), np.uint8)
            a[..., i % 3] = 200 + rng.integers(0, 50)
            Image.fromarray(a).save(root / name / f"{k}.png")
    if junk:
        (root / names[0] / "readme.txt").write_text("not an image")
    return root


def test_folder_set_matching_and_errors(tmp_path):
    lm = _tiny()
    root = _folder(tmp_path / "set", ["RED", "Green", "blue-sky", "purple"])
    ls = open_labelled_set(f"folder:{root}", lm)
    assert len(ls) == 12 and ls.skipped == 1 and sorted(set(ls.labels)) == [0, 1, 2]
    assert any("purple" in n for n in ls.notes)
    other = _folder(tmp_path / "other", ["cats", "dogs"], junk=False)
    with pytest.raises(AblationError, match="names a class"):
        open_labelled_set(f"folder:{other}", lm)
    with pytest.raises(AblationError, match="does not exist"):
        open_labelled_set(f"folder:{tmp_path / 'nope'}", lm)


def test_evaluate_set_accuracy_and_balanced(tmp_path):
    lm = _tiny()
    ls = open_labelled_set(f"folder:{_folder(tmp_path / 's', ['red', 'green', 'blue_sky'])}", lm)
    iv = Intervention("2", tuple(range(16)))
    res = evaluate_set(lm, ls, [iv])
    with torch.no_grad():
        x = torch.stack([ls.load(i) for i in range(len(ls))])
        before = lm.model(lm.normalize(x)).argmax(1).numpy()
        with ablate(lm.model, [iv]):
            after = lm.model(lm.normalize(x)).argmax(1).numpy()
    assert res.acc_before == pytest.approx((before == ls.labels).mean())
    assert res.acc_after == pytest.approx((after == ls.labels).mean())
    row = res.classes.set_index("class").loc["red"]
    pos = ls.labels == 0
    recall, tnr = (after[pos] == 0).mean(), (after[~pos] != 0).mean()
    assert row.acc_after == pytest.approx(recall)
    assert row.balanced_after == pytest.approx((recall + tnr) / 2)
    js = res.to_json()
    assert set(js) == {"acc_before", "acc_after", "classes"}
    assert set(js["classes"][0]) == {"class", "n", "acc_before", "acc_after", "balanced_before",
                                     "balanced_after"}


@pytest.mark.parametrize("pool,mode,value", [("avg", "zero", 0.0), ("avg", "scale", -2.0),
                                             ("max", "value", 0.7), ("max", "mean", 0.0)])
def test_importance_closed_form_equals_rerun(tmp_path, pool, mode, value):
    lm = _tiny(pool)
    ls = open_labelled_set(f"folder:{_folder(tmp_path / 's', ['red', 'green', 'blue_sky'], 5)}", lm)
    means = unit_means(lm, "3", (x for _i, x in ls.batches(8))) if mode == "mean" else None
    fast = rank_units(lm, ls, "3", mode, value, means, batch_size=8)
    slow = rank_units(lm, ls, "3", mode, value, means, batch_size=8, force_generic=True)
    assert fast.fast and not slow.fast
    np.testing.assert_allclose(fast.logit_drop, slow.logit_drop, atol=1e-4)
    np.testing.assert_allclose(fast.balanced_drop, slow.balanced_drop)
    # the top unit really is the one whose removal costs the most true-class logit
    r = fast.row("red")
    assert fast.top("red", 1, by="logit")[0] == int(np.argmax(fast.logit_drop[r]))
    curve = control_curve(lm, ls, fast, [1, 4, 16], value=value, means=means, batch_size=8)
    assert list(curve.columns) == ["n", "removed_top", "kept_top_only", "baseline"]
    assert curve["n"].tolist() == [1, 4, 16]


def test_importance_unknown_class(tmp_path):
    lm = _tiny()
    ls = open_labelled_set(f"folder:{_folder(tmp_path / 's', ['red', 'green'], 3)}", lm)
    imp = rank_units(lm, ls, "2")
    with pytest.raises(AblationError, match="not a class"):
        imp.top("violet")
    with pytest.raises(AblationError, match="no images"):
        imp.top("blue sky")


def test_means_from_acts_and_unit_means():
    acts = np.random.default_rng(0).random((6, 4, 3, 3)).astype(np.float16)
    np.testing.assert_allclose(means_from_acts(acts, chunk=4).numpy(),
                               acts.astype(np.float64).mean((0, 2, 3)), rtol=1e-5)
    lm = _tiny()
    x = torch.rand(4, 3, 32, 32)
    m = unit_means(lm, "0", [x[:2], x[2:]])
    with torch.no_grad():
        ref = lm.model[0](lm.normalize(x)).mean((0, 2, 3))
    assert torch.allclose(m, ref, atol=1e-5)


def test_replay_with_nested_and_separate_layers():
    lm = load_model("resnet18", "none")
    x = torch.randn(1, 3, 64, 64)
    ivs = [Intervention("layer4", (1, 2)), Intervention("layer4.0.conv1", (3,), "scale", 4.0),
           Intervention("layer3", (7,), "value", 2.0)]
    rp = Replay(lm.model, sorted({iv.layer for iv in ivs}))
    rp.record(x)
    assert rp.split == "layer3"
    with ablate(lm.model, ivs), torch.no_grad():
        ref = lm.model(x)
        got = rp.run()
    assert torch.allclose(got, ref, atol=1e-5)
    rp = Replay(lm.model, ["layer4", "layer4.0.conv1"])
    rp.record(x)
    assert rp.split == "layer4.0.conv1"
    with ablate(lm.model, ivs[:2]), torch.no_grad():
        assert torch.allclose(rp.run(), lm.model(x), atol=1e-5)


def test_toyworld_scene_set(tmp_path, monkeypatch):
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path))
    lm = load_model("toyworld", "none")
    ls = open_labelled_set("toyworld:30", lm)
    assert len(ls) == 30 and ls.load(0).shape == (3, 224, 224)
    assert set(ls.labels) <= set(range(len(lm.class_names))) and len(set(ls.labels)) > 2
    k = check_units(lm, "conv6", [0])
    res = evaluate_set(lm, ls, [Intervention("conv6", tuple(range(0, k, 2)))], batch_size=16)
    assert res.classes["n"].sum() == 30
    assert set(res.classes["class"]) <= set(lm.class_names)
    imp = rank_units(lm, ls, "conv6", batch_size=16)
    assert imp.fast and imp.balanced_drop.shape == (len(imp.classes), k)
    with pytest.raises(AblationError, match="whole number of images, e.g. toyworld:500"):
        open_labelled_set("toyworld:many", lm)


def test_replay_restores_the_model_after_an_exception():
    lm = load_model("resnet18", "none")
    x = torch.randn(1, 3, 64, 64)
    rp = Replay(lm.model, ["layer3"])
    before = rp.record(x)
    with pytest.raises(AblationError, match="out of range"):
        with ablate(lm.model, [Intervention("layer3", (999,))]):
            rp.run()
    assert all("forward" not in m.__dict__ for m in lm.model.modules())
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0
               for m in lm.model.modules())
    with torch.no_grad():
        assert torch.allclose(lm.model(x), before, atol=1e-6)
    assert torch.allclose(rp.run(), before, atol=1e-6)     # the cache survived too


def test_unit_losses_match_a_real_ablation(tmp_path):
    """losses(u): per class, the accuracy drop measured by really removing unit u alone."""
    from dissect.interventions.labelled import SetCache
    lm = _tiny()
    ls = open_labelled_set(f"folder:{_folder(tmp_path / 's', ['red', 'green', 'blue_sky'], 5)}", lm)
    imp = rank_units(lm, ls, "3", batch_size=8)
    cache = SetCache(lm, ls, ["3"], batch_size=8)
    worst = int(np.argmax(imp.acc_drop.max(0)))          # the unit whose removal hurts a class most
    for u in {worst, 0}:
        loss = imp.losses(u, n=3)
        real = cache.evaluate([Intervention("3", (u,))]).classes.set_index("class")
        assert list(loss["acc_drop"]) == sorted(loss["acc_drop"], reverse=True)
        for _i, r in loss.iterrows():
            assert r["acc_drop"] == pytest.approx(real.loc[r["class"], "acc_before"]
                                                  - real.loc[r["class"], "acc_after"])
            assert r["acc"] == pytest.approx(real.loc[r["class"], "acc_before"])
    assert imp.losses(worst, 1)["acc_drop"].iloc[0] == pytest.approx(imp.acc_drop.max())
    with pytest.raises(AblationError, match="out of range"):
        imp.losses(16)


def test_moved_most_orders_a_diverging_chart():
    from dissect.interventions.ablation import moved_most
    ch = [{"class": c, "delta": d} for c, d in (("a", 0.01), ("b", -0.5), ("c", 0.3), ("d", -0.02))]
    assert [c["class"] for c in moved_most(ch, 3)] == ["c", "d", "b"]
    assert moved_most([], 5) == []
