"""Directions, steering, readout and TCAV: the parts that need no big world (fast).

Ground truth on a real ToyWorld world is in test_directions_groundtruth.py (slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dissect.__main__ import main
from dissect.directions.concept import Direction, auroc, check_direction, load_direction, save_direction
from dissect.errors import DirectionError
from dissect.directions.readout import dola_contrast, jsd
from dissect.toyworld.generate import render_pair
from dissect.toyworld.world import OBJECTS


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _direction(tmp_path, model="toyworld", layer="conv6", k=128, name="d") -> str:
    v = torch.zeros(k)
    v[0] = 1
    d = Direction(v, layer, "sun", "mean", "max", 0.97, 3.0, 2.0, model, "default", 20, 30,
                  unit_auroc=torch.linspace(0, 1, k))
    return str(save_direction(d, tmp_path / name))


def test_pair_twins_differ_only_where_the_object_was_drawn():
    sun = OBJECTS.index("sun") + 1
    for i in range(6):
        shown, hidden = render_pair(3, i, "sun", size=112)
        diff = (shown.rgb != hidden.rgb).any(2)
        assert (shown.obj == sun).any() and not (hidden.obj == sun).any()
        assert np.array_equal(diff, (shown.obj == sun) & diff)      # nothing else moved
        assert diff.sum() > 0.8 * (shown.obj == sun).sum()
        assert "sun" in shown.objects and "sun" not in hidden.objects
    with pytest.raises(ValueError, match="unknown ToyWorld object"):
        render_pair(0, 0, "dragon")


def test_pair_probe_rows_come_in_twins(cache):
    from dissect.errors import ProbeError
    from dissect.probes.registry import open_probe
    p = open_probe("toyworld:5", seed=2, pair="boat")
    assert len(p) == 10 and p.pair == "boat"
    assert list(p.rows["twin"]) == ["with", "without"] * 5
    assert list(p.rows["pair"].astype(int)) == [i // 2 for i in range(10)]
    assert (cache / "toyworld" / "seed2_n5_pair-boat" / "index.csv").is_file()
    with pytest.raises(ProbeError, match="not a ToyWorld object; choose from"):
        open_probe("toyworld:5", pair="dragon")
    with pytest.raises(ProbeError, match="needs a ToyWorld probe"):
        open_probe("broden:/nowhere", pair="sun")


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(size=(300, 4)) + y[:, None], 1)      # many ties
    got = auroc(y, s)
    assert np.allclose(got, [roc_auc_score(y, s[:, k]) for k in range(4)])
    assert auroc(y, s[:, 0]) == pytest.approx(roc_auc_score(y, s[:, 0]))


def test_jsd_and_dola_rule():
    rng = np.random.default_rng(1)
    lp = np.log(rng.dirichlet(np.ones(5), size=8))
    lq = np.log(rng.dirichlet(np.ones(5), size=8))
    assert np.allclose(jsd(lp, lp), 0, atol=1e-12)
    assert np.allclose(jsd(lp, lq), jsd(lq, lp))
    assert (jsd(lp, lq) <= np.log(2) + 1e-12).all()
    score, chosen = dola_contrast(lp, [lq, lp])
    assert (chosen == 0).all()                            # the identical head never diverges most
    assert (np.isfinite(score[np.arange(8), lp.argmax(1)])).all()   # relative top keeps the argmax
    score, chosen = dola_contrast(lp, [lp])               # premature == mature: final unchanged
    keep = np.isfinite(score)
    assert np.allclose(score[keep], lp[keep]) and (score.argmax(1) == lp.argmax(1)).all()


def test_direction_files_round_trip_and_name_both_models(tmp_path):
    from dissect.models.registry import load_model
    path = _direction(tmp_path, model="resnet18", layer="layer4", k=512)
    d = load_direction(path)
    assert (d.layer, d.model, d.vector.numel()) == ("layer4", "resnet18", 512)
    js = json.loads((tmp_path / "d" / "direction.json").read_text())
    assert {"layer", "concept", "method", "auroc_heldout", "norm", "sigma", "pooling"} <= set(js)
    lm = load_model("toyworld", "default")
    with pytest.raises(DirectionError, match=r"made for resnet18 .*layer layer4, not toyworld"):
        check_direction(d, lm)
    d2 = load_direction(_direction(tmp_path, name="e"))
    with pytest.raises(DirectionError, match="layer conv6, not layer conv5"):
        check_direction(d2, lm, "conv5")
    with pytest.raises(DirectionError, match="holds no saved direction"):
        load_direction(tmp_path / "nothing")


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_bad_input_messages(tmp_path, cache, capsys):
    other = _direction(tmp_path, model="resnet18", layer="layer4", k=512, name="r18")
    ok = _direction(tmp_path)
    rc, _o, err = _cli(capsys, "steer", "--direction", ok, "--alpha", "0,two", "--set",
                       "toyworld:12")
    assert rc == 2 and "'two' is not a number" in err and "Traceback" not in err
    rc, _o, err = _cli(capsys, "steer", "--direction", other, "--set", "toyworld:12")
    assert rc == 2 and "resnet18" in err and "layer4" in err and "toyworld" in err
    rc, _o, err = _cli(capsys, "direction", "--layer", "fc", "--concept", "sun", "--probe",
                       "toyworld:12", "--out", str(tmp_path / "x"))
    assert rc == 2 and "layer 'fc' has no channels" in err
    rc, _o, err = _cli(capsys, "direction", "--layer", "conv6", "--concept", "moon", "--probe",
                       "toyworld:12", "--out", str(tmp_path / "y"))
    assert rc == 2 and "positive image(s)" in err and "need at least 10" in err
    assert not (tmp_path / "y").exists()
    rc, _o, err = _cli(capsys, "steer", "--direction", ok, "--units", "top:x", "--set",
                       "toyworld:12")
    assert rc == 2 and "top:K" in err


def test_steering_is_exact_and_leaves_no_hooks(tmp_path, cache, capsys):
    from dissect.interventions.ablation import ablate
    from dissect.interventions.labelled import open_labelled_set
    from dissect.models.registry import load_model
    from dissect.directions.steering import SteerIntervention, dose_response, parse_top, steered_logits
    lm = load_model("toyworld", "default")
    d = load_direction(_direction(tmp_path))
    ls = open_labelled_set("toyworld:12", lm)
    x = torch.stack([ls.load(i) for i in range(len(ls))])
    res = dose_response(lm, d, [x[:5], x[5:]], [0, 3], random=2, keep_probs=True)
    with torch.no_grad():
        plain = torch.softmax(lm.model(lm.normalize(x)), 1).numpy()
    assert np.allclose(res.probs[:, 0], plain, atol=1e-5)           # α = 0 is the plain model
    steered = torch.softmax(steered_logits(lm, d, x, 3), 1).numpy()
    assert np.allclose(res.probs[:, 1], steered, atol=1e-5)         # replayed suffix is exact
    # max pooling + linear head: adding c to unit 0 everywhere moves logits by c·W[:, 0]
    with torch.no_grad():
        base = lm.model(lm.normalize(x))
    moved = steered_logits(lm, d, x, 3) - base
    assert torch.allclose(moved, (3 * d.sigma * lm.model.fc.weight[:, 0]).expand_as(moved), atol=1e-4)
    assert res.random_p_mean.shape == res.p_mean.shape
    with torch.no_grad(), ablate(lm.model, [SteerIntervention(d, 3)]):
        assert torch.allclose(lm.model(lm.normalize(x)), base + moved, atol=1e-4)
    assert all(not m._forward_hooks for m in lm.model.modules())
    assert parse_top("top:3", d) == [0, 1, 127]       # AUROC furthest from 0.5 at both ends
    rc, out, _e = _cli(capsys, "steer", "--direction", str(tmp_path / "d"), "--alpha", "0,2",
                       "--set", "toyworld:12", "--random", "2", "--json")
    js = json.loads(out)
    assert rc == 0 and js["alphas"] == [0, 2] and len(js["classes"]) == 9
    assert {"class", "p_mean"} <= set(js["classes"][0]) and len(js["random"]["classes"]) == 9
