"""Dictionary features of the trained ToyWorld CNN: exact plumbing and the causal known answer.

- PCA at K = C: ablating no feature reproduces the model's logits bit for bit, and ablating one
  feature equals the hand computation x - z_k * decoder[k], z_k = (x - mean) . decoder[k];
- switching off the SAE features labelled `sun` in conv6 costs beach at least half its accuracy
  on a world neither the model nor the SAE saw (as the sun units do), and leaves other scenes.
"""
from __future__ import annotations

import pytest
import torch

from dissect.interventions.ablation import ablate
from dissect.features import Basis, features_layer
from dissect.features.ablate import FeatureIntervention, feature_intervention
from dissect.engine.config import DissectConfig
from dissect.engine.dissection import dissect
from dissect.models.hooks import intervene
from dissect.runs.folder import open_run
from dissect.toyworld.generate import render_parallel
from dissect.toyworld.groundtruth import concept_units, scene_accuracy
from dissect.toyworld.model import load_toyworld

pytestmark = pytest.mark.slow
N_PROBE, PROBE_SEED, TEST_SEED = 400, 7, 2024      # worlds the model never trained on


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("featgt")
    cfg = DissectConfig(model="toyworld", weights="default", layers=["conv6"],
                        probe=f"toyworld:{N_PROBE}",
                        probe_options={"seed": PROBE_SEED, "cache_dir": str(tmp / "cache"),
                                       "categories": ["object", "part"]},
                        batch_size=50, workers=0, cache="ram")
    return dissect(cfg, tmp / "run", progress=False)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_toyworld("default", "cpu").model


@pytest.fixture(scope="module")
def world():
    return render_parallel(TEST_SEED, 900, workers=1, chunk=300)


def _x(n: int = 16) -> torch.Tensor:
    x, _y = render_parallel(TEST_SEED + 1, n, workers=1, chunk=n)
    from dissect.toyworld.groundtruth import _prep
    return _prep(torch.from_numpy(x))


def test_pca_full_basis_is_exact_plumbing(toy_run, model):
    out = features_layer(toy_run, "conv6", "pca", k=128, progress=False, keep_acts=False)
    basis = Basis.load(out["path"])
    assert out["r2"] > 0.999                       # K = C: a rotation, nothing lost
    x = _x()
    with torch.no_grad():
        ref = model(x)
        with ablate(model, [FeatureIntervention("conv6", basis, ())]):
            same = model(x)
        assert torch.equal(ref, same)
        with ablate(model, [FeatureIntervention("conv6", basis, (3,))]):
            after = model(x)

        def by_hand(a: torch.Tensor) -> torch.Tensor:
            d, m = basis.decoder[3], basis.decoder_bias
            z = torch.einsum("bchw,c->bhw", a - m.view(1, -1, 1, 1), d)
            return a - z[:, None] * d.view(1, -1, 1, 1)
        with intervene(model, {"conv6": by_hand}):
            hand = model(x)
    assert torch.allclose(after, hand, atol=1e-4), (after - hand).abs().max()
    assert not torch.allclose(after, ref, atol=1e-4)


def test_sun_features_break_beach_on_an_unseen_world(toy_run, model, world):
    out = features_layer(toy_run, "conv6", "sae", k=256, progress=False, keep_acts=False)
    run = open_run(toy_run)
    feats = concept_units(run, out["layer"], "sun")
    assert feats, run.units(out["layer"])[["unit", "label", "iou"]].head(20)
    x, y = world
    before = scene_accuracy(model, x, y)
    iv = feature_intervention(run, out["layer"], feats)
    with ablate(model, [iv]):
        after = scene_accuracy(model, x, y)
    units_after = scene_accuracy(model, x, y, "conv6", concept_units(run, "conv6", "sun"))
    print("sun features", feats, "beach", before["beach"], "->", after["beach"],
          "(sun units ->", units_after["beach"], ")", "all", before["all"], "->", after["all"])
    assert after["beach"] <= before["beach"] / 2, (before, after)
    for s in before:
        if s not in ("beach", "sky", "all"):
            assert after[s] >= before[s] - 0.1, (s, before[s], after[s])


def test_sun_feature_direction_steers(toy_run, tmp_path, capsys):
    """A sun feature's decoder row, saved as a direction, steers like any direction."""
    import json
    from dissect.__main__ import main
    run = open_run(toy_run)
    name = next((l for l in run.layers if l.startswith("conv6@sae")), None) or \
        features_layer(toy_run, "conv6", "sae", k=256, progress=False, keep_acts=False)["layer"]
    table = run.units(name)
    sun = table[table["unit"].isin(concept_units(run, name, "sun"))]
    feat = int(sun.loc[sun["iou"].idxmax(), "unit"])         # the best sun feature
    dest = tmp_path / "sunfeat"
    assert main(["direction", "--feature", str(toy_run), name, str(feat), "--out",
                 str(dest)]) == 0
    capsys.readouterr()
    assert main(["steer", "--model", "toyworld", "--direction", str(dest), "--alpha", "0,8",
                 "--set", "toyworld:60", "--seed", str(TEST_SEED), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    beach = next(c for c in doc["classes"] if c["class"] == "beach")["p_mean"]
    assert beach[1] > beach[0], beach


def test_ablate_command_on_sun_features(toy_run, capsys):
    import json
    from dissect.__main__ import main
    run = open_run(toy_run)
    name = next((l for l in run.layers if l.startswith("conv6@sae")), None) or \
        features_layer(toy_run, "conv6", "sae", k=256, progress=False, keep_acts=False)["layer"]
    capsys.readouterr()
    assert main(["ablate", "--run", str(toy_run), "--layer", name, "--concept", "sun",
                 "--set", "toyworld:120", "--seed", str(TEST_SEED), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    beach = next(c for c in doc["classes"] if c["class"] == "beach")
    assert beach["acc_after"] <= beach["acc_before"] / 2, beach
    assert doc["intervention"]["layer"] == "conv6"
