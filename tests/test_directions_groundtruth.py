"""Ground truth for directions, steering, TCAV and readout on a ToyWorld world the model never saw.

Thresholds sit below the figures measured with the committed weights (docs/directions.md).
The issue's goal of cos ≥ 0.9 between the natural-probe mean direction and the paired-render
direction does not hold (measured 0.86-0.88 on three worlds: sun co-occurs with the sea, boat,
cloud and bird of its scenes); the test asserts 0.8 there and ≥ 0.95 where the contrast is paired.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dissect.__main__ import main
from dissect.directions.concept import (_pair_differences, contrast_from_probe, cosine, fit,
                                load_direction, paired_direction)
from dissect.interventions.labelled import open_labelled_set
from dissect.models.registry import load_model
from dissect.probes.registry import open_probe

N, SEED, N_PAIRS = 400, 3, 120

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    old = os.environ.get("DISSECT_CACHE")
    os.environ["DISSECT_CACHE"] = str(tmp_path_factory.mktemp("dircache"))
    torch.set_num_threads(2)
    lm = load_model("toyworld", "default")
    probe = open_probe(f"toyworld:{N}", seed=SEED)
    pairs = open_probe(f"toyworld:{N_PAIRS}", seed=SEED, pair="sun")
    yield lm, probe, pairs
    if old is None:
        os.environ.pop("DISSECT_CACHE", None)
    else:
        os.environ["DISSECT_CACHE"] = old


def test_sun_direction_reads_sun_and_follows_the_paired_renders(world):
    lm, probe, pairs = world
    c = contrast_from_probe(lm, probe, "sun", "conv6")
    d = fit(c, "mean")
    cp = contrast_from_probe(lm, pairs, "sun", "conv6")
    truth = paired_direction(cp)
    assert d.auroc_heldout >= 0.95                       # measured 0.98-1.00
    assert cosine(d.vector, truth) >= 0.8                # measured 0.86-0.88 (goal 0.9: not met)
    # fitted on training pairs, the mean shift matches the held-out pairs' true direction
    dp = fit(cp, "mean")
    held = _pair_differences(cp.X[~cp.train], cp.y[~cp.train], cp.pair[~cp.train]).mean(0)
    assert cosine(dp.vector, held) >= 0.95
    assert cosine(fit(cp, "pca").vector, truth) >= 0.95   # RepE PC1 of pair differences
    # pooling as the head pools matters: mean pooling hides small suns (~0.6)
    cm = contrast_from_probe(lm, probe, "sun", "conv6", "mean")
    assert fit(cm, "mean").auroc_heldout < 0.8 < d.auroc_heldout


def test_adding_sun_to_sea_and_boat_raises_beach(world, tmp_path, capsys):
    lm, _probe, _pairs = world
    rc = main(["direction", "--layer", "conv6", "--concept", "sun", "--probe", f"toyworld:{N}",
               "--seed", str(SEED), "--out", str(tmp_path / "sun"), "--json"])
    js = json.loads(capsys.readouterr().out)
    assert rc == 0 and js["pooling"] == "max" and js["auroc_heldout"] >= 0.95
    assert {"layer", "concept", "method", "auroc_heldout", "norm", "sigma"} <= set(js)
    rc = main(["steer", "--direction", str(tmp_path / "sun"), "--alpha", "0,1,2,4,8", "--set",
               f"toyworld:{N}", "--seed", str(SEED), "--with", "sea,boat", "--without", "sun",
               "--random", "10", "--json"])
    js = json.loads(capsys.readouterr().out)
    assert rc == 0 and js["images"] >= 30
    beach = np.array(next(r["p_mean"] for r in js["classes"] if r["class"] == "beach"))
    rand = np.array(next(r["p_mean"] for r in js["random"]["classes"] if r["class"] == "beach"))
    assert (np.diff(beach) > 0).all()                    # monotonic in α
    rise = beach[-1] - beach[0]
    assert rise >= 0.4                                   # measured 0.06 -> 0.77
    # random directions of the same norm: far less (measured at α = 4: 0.01-0.10 against 0.6-0.7;
    # at α = 8 a random shift this large spreads probability, up to 0.2 on one world)
    moved = beach - beach[0]
    assert np.abs(rand - rand[0])[3] < 0.25 * moved[3]
    assert np.abs(rand - rand[0]).max() < 0.35 * rise
    # ITI: only the 16 best single units carry the shift, still towards beach
    from dissect.interventions.labelled import open_labelled_set
    from dissect.directions.presence import select
    from dissect.directions.steering import dose_response, parse_top
    d = load_direction(tmp_path / "sun")
    sub = select(open_labelled_set(f"toyworld:{N}", lm, seed=SEED), ["sea", "boat"], ["sun"])
    res = dose_response(lm, d, (x for _i, x in sub.batches(64)), [0, 8],
                        parse_top("top:16", d))
    j = lm.class_names.index("beach")
    assert res.p_mean[1, j] > res.p_mean[0, j] + 0.1


def test_tcav_sun_for_beach_is_significant_checkered_is_not(world):
    from dissect.directions.tcav import tcav
    lm, probe, _pairs = world
    lset = open_labelled_set(f"toyworld:{N}", lm, seed=SEED)
    # 50 runs: with 20 this world gave sun 0.75 against random 0.5, p = 0.11 (world 0: p = 0.002)
    sun, = tcav(lm, "conv6", ["sun"], "beach", lset, probe, runs=50, seed=SEED)
    assert sun.significant and sun.score > np.mean(sun.random_scores) + 0.2
    assert len(sun.random_scores) == 50
    # checkered is a background/body texture that no scene is defined by
    chk, = tcav(lm, "conv6", ["checkered"], "beach", lset, probe, runs=50, seed=SEED)
    assert not chk.significant and chk.p_value > 0.05


def test_readout_knows_the_scene_late_and_reads_sun(world, capsys):
    rc = main(["readout", "--layers", "conv1,conv2,conv3,conv4,conv5,conv6", "--set",
               f"toyworld:{N}", "--seed", str(SEED), "--dola", "--concepts", "sun", "--json"])
    js = json.loads(capsys.readouterr().out)
    assert rc == 0
    acc = {r["layer"]: r["acc_heldout"] for r in js["layers"]}
    sun = {r["layer"]: r["auroc"]["sun"] for r in js["layers"]}
    assert acc["conv6"] >= acc["conv1"] + 0.3 and js["final_acc"] >= 0.85
    assert sun["conv6"] >= 0.95 and sun["conv6"] > sun["conv1"]
    assert set(js["dola"]) >= {"acc", "final_acc", "premature"}
    assert 0 <= js["overthinking"]["rate"] <= 1
    rc = main(["readout", "--layers", "conv1,conv6", "--set", f"toyworld:{N}", "--seed",
               str(SEED), "--json"])
    assert json.loads(capsys.readouterr().out)["cached"] is False   # other layers: new features
