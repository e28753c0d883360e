"""Feature layers in the ablation lab and on the unit page, against the command line.

- the lab's code path (studio.feature_lab.lab_intervention + ImageAblation.compare on the
  image studio.lab.image_input gives) equals `ablate --run RUN --layer conv6@sae16` on the same
  images, in every mode (zero, mean, value, scale);
- "what the network loses" ranks features by the same write-back: each row equals the set
  accuracy after ablating that one feature through the command's own intervention;
- "Save as direction" writes the feature's decoder row, as `direction --feature` does, only to
  a checked folder under the runs root, replacing only a direction folder and only when asked;
- the lab and the unit page run on a feature layer: units from the link, a concept's features,
  the set accuracy equal to the command's intervention over the same set.

One small ToyWorld run (40 probe images, conv6) with a TopK SAE of 16 features.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dissect.__main__ import main
from dissect.runs.folder import open_run

N_PROBE, K = 40, 16
NAME = f"conv6@sae{K}"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def feat_root(tmp_path_factory) -> Path:
    """<root>/runs/ft: a ToyWorld run of conv6 with the feature layer conv6@sae16."""
    from dissect.features import features_layer
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("featui")
    out = root / "runs" / "ft"
    assert main(["run", "--model", "toyworld", "--layer", "conv6", "--probe",
                 f"toyworld:{N_PROBE}", "--batch-size", "20", "--workers", "0", "--quiet",
                 "--out", str(out)]) == 0
    done = features_layer(out, "conv6", "sae", k=K, topk=4, steps=300, progress=False)
    assert done["layer"] == NAME
    return root


@pytest.fixture(scope="module")
def lm():
    from dissect.models.registry import load_model
    return load_model("toyworld", "default")


def _busy_features(run, n: int = 3) -> list[int]:
    """The features with the largest mean code (they move the logits)."""
    from dissect.interventions.ablation import means_from_run
    return [int(u) for u in torch.argsort(means_from_run(run, NAME), descending=True)[:n]]


@pytest.mark.parametrize("mode,value,flag", [("zero", 0.0, "zero"), ("mean", 0.0, "mean"),
                                             ("value", 0.5, "value=0.5"),
                                             ("scale", 3.0, "scale=3")])
def test_lab_equals_the_ablate_command(feat_root, lm, capsys, mode, value, flag):
    from dissect.interventions.ablation import ImageAblation, means_from_run
    from studio import lab as L
    from studio.feature_lab import lab_intervention
    run = open_run(feat_root / "runs" / "ft")
    units = _busy_features(run)
    means = means_from_run(run, NAME) if mode == "mean" else None     # what L.get_means reads
    iv = lab_intervention(run, NAME, units, mode, value, means)
    paths = [str(run.images.iloc[i]["path"]) for i in (0, 5)]
    lab = ImageAblation(lm)
    ours = []
    for p in paths:                # an upload of the file: the lab's image path to the model
        x, _name = L.image_input(lm, {"kind": "upload"}, None, (Path(p).name, Path(p).read_bytes()))
        ours.append(lab.compare(x, [iv], path=p))
    capsys.readouterr()
    assert main(["ablate", "--run", str(run.path), "--layer", NAME, "--units",
                 ",".join(map(str, units)), "--mode", flag, "--images", *paths, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["intervention"]["layer"] == "conv6"
    for r, cli in zip(ours, doc["images"]):
        assert [c for c, _p in r.after] == [a["class"] for a in cli["after"]]
        assert np.allclose([p for _c, p in r.after], [a["p"] for a in cli["after"]], atol=2e-6)
        assert np.allclose([p for _c, p in r.before], [b["p"] for b in cli["before"]], atol=2e-6)
    moved = max(float(np.abs(r.probs_after - r.probs_before).max()) for r in ours)
    assert moved > 1e-3, (mode, moved)              # the edit reaches the logits


def test_lab_intervention_of_a_unit_layer_is_unchanged(feat_root):
    from dissect.interventions.ablation import Intervention
    from studio.feature_lab import base_layer, lab_intervention, layer_size
    run = open_run(feat_root / "runs" / "ft")
    iv = lab_intervention(run, "conv6", [1, 2], "scale", 2.0)
    assert type(iv) is Intervention and iv.units == (1, 2) and iv.layer == "conv6"
    assert base_layer(NAME) == "conv6" and layer_size(run, {"conv6": 128}, NAME) == K
    assert layer_size(run, {"conv6": 128}, "conv6") == 128
    from dissect.errors import FeatureError
    with pytest.raises(FeatureError, match="refit it"):
        layer_size(run, {"conv6": 64}, NAME)


def test_feature_losses_are_the_write_back_one_feature_at_a_time(feat_root, lm):
    from dissect.features.ablate import feature_intervention
    from dissect.features.importance import rank_features
    from dissect.interventions.labelled import SetCache, open_labelled_set
    run = open_run(feat_root / "runs" / "ft")
    lset = open_labelled_set("toyworld:24", lm, seed=3)
    imp = rank_features(lm, lset, run, NAME, batch_size=16)
    assert imp.acc_drop.shape == (len(imp.classes), K) and imp.layer == NAME
    cache = SetCache(lm, lset, ["conv6"])
    for k in _busy_features(run, 2):
        real = cache.evaluate([feature_intervention(run, NAME, [k])]).classes.set_index("class")
        drop = (real["acc_before"] - real["acc_after"])
        got = imp.losses(k, n=len(imp.classes)).set_index("class")["acc_drop"]
        assert np.allclose(got.sort_index().to_numpy(), drop.loc[got.index].sort_index().to_numpy())


def test_save_as_direction_checked_and_replaced_only_when_asked(feat_root, tmp_path):
    from dissect.directions.concept import load_direction
    from dissect.errors import DirectionError, RunError
    from dissect.features.basis import Basis
    from studio.feature_direction_view import default_name, save_feature_direction
    root = feat_root / "runs"
    run = open_run(root / "ft")
    out = save_feature_direction(root, run, NAME, 2, "f2")
    assert out == (root / "directions" / "f2").resolve()
    d = load_direction(out)
    row = Basis.load(run.layer_dir(NAME)).decoder[2]
    assert torch.allclose(d.vector, row / row.norm()) and d.layer == "conv6"
    cli = tmp_path / "cli"                          # the command writes the same direction
    assert main(["direction", "--feature", str(run.path), NAME, "2", "--out", str(cli)]) == 0
    assert torch.equal(load_direction(cli).vector, d.vector)
    with pytest.raises(RunError, match="already holds a direction"):
        save_feature_direction(root, run, NAME, 3, "f2")
    assert torch.equal(load_direction(out).vector, d.vector)         # untouched
    save_feature_direction(root, run, NAME, 3, "f2", overwrite=True)
    assert not torch.equal(load_direction(out).vector, d.vector)
    (root / "directions" / "notes").mkdir()
    (root / "directions" / "notes" / "a.txt").write_text("mine")
    with pytest.raises(RunError, match="not a direction"):
        save_feature_direction(root, run, NAME, 3, "notes", overwrite=True)
    assert (root / "directions" / "notes" / "a.txt").read_text() == "mine"
    for bad in ("../ft", "a/b", "..", "", ".hidden"):
        with pytest.raises(DirectionError, match="cannot name a direction"):
            save_feature_direction(root, run, NAME, 3, bad)
    assert default_name(NAME, 3, "sky (object)") == "sky-object-conv6-sae16-f3"
    other = tmp_path / "root"                       # directions/ a link out of the runs root
    other.mkdir()
    (other / "directions").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DirectionError, match="leaves the runs folder"):
        save_feature_direction(other, run, NAME, 3, "f3")
    assert not (tmp_path / "f3").exists()


def test_pages_on_a_feature_layer(feat_root, monkeypatch, settle):
    """The lab ablates features; the unit page ranks the classes a feature matters for and
    saves it as a direction, with the path and a link to the Directions page."""
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("DISSECT_RUNS", str(feat_root / "runs"))
    run = open_run(feat_root / "runs" / "ft")
    units = _busy_features(run, 2)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=240)
    at.query_params.update({"run": "ft", "layer": NAME, "unit": str(units[0]),
                            "units": ",".join(map(str, units))})
    at.session_state["loss_set"] = "toyworld:24"
    at.session_state["abl_set"] = ""                  # no set job until the test names one
    at.run()
    at.switch_page("pages/ablation_lab.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(at.session_state[f"abl_units_{NAME}"]) == sorted(units)
    assert any(f"2 of {K} features selected" in c.value and "features of conv6" in c.value
               for c in at.caption), [c.value for c in at.caption]
    assert any(m.value.startswith("**After the ablation**") for m in at.markdown)
    at.button(key="abl_use_concept").click().run()           # every feature of a concept
    concept = at.selectbox(key="abl_concept").value
    table = run.units(NAME)
    cut = float(run.config.get("iou_threshold", 0.04) or 0.04)
    want = table[(table["label"] == concept) & (table["iou"].astype(float) >= cut)]["unit"]
    assert sorted(at.session_state[f"abl_units_{NAME}"]) == sorted(int(u) for u in want)
    at.text_input(key="abl_set").set_value("toyworld:24").run()      # accuracy over a set
    settle(at)
    assert not at.exception, [e.value for e in at.exception]
    got = {m.label: m.value for m in at.metric}
    from dissect.features.ablate import feature_intervention
    from dissect.interventions.labelled import SetCache, open_labelled_set
    from dissect.models.registry import load_model
    lm = load_model("toyworld", "default")
    real = SetCache(lm, open_labelled_set("toyworld:24", lm, limit=200), ["conv6"]).evaluate(
        [feature_intervention(run, NAME, want)])
    assert got["Accuracy after"] == f"{real.acc_after:.1%}", (got, real.acc_after)
    at.switch_page("pages/unit_detail.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    heads = [h.value for h in at.subheader]
    assert "What the network loses without this feature" in heads, heads
    assert "Save as direction" in heads
    at.button(key="loss_compute").click().run()
    settle(at)
    assert not at.exception, [e.value for e in at.exception]
    assert any("acc_drop" in d.value.columns for d in at.dataframe) or \
        any("loses accuracy" in i.value for i in at.info)
    at.text_input(key=f"feat_dir_name_{NAME}_{units[0]}").set_value("page-dir")
    at.button(key="feat_dir_save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    out = feat_root / "runs" / "directions" / "page-dir"
    assert any(str(out.resolve()) in s.value for s in at.success), [s.value for s in at.success]
    assert any(pl.proto.label == "Open the Directions page" for pl in at.get("page_link"))
    at.button(key="feat_dir_save").click().run()            # again, without Replace: refused
    assert any("already holds a direction" in e.value for e in at.error)
