"""The ablation lab page, driven by streamlit.testing against a run folder from the real engine."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "ablation_lab.py")
TREE_UNITS = [4, 9, 200]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_labelled_run):
    root = tmp_path_factory.mktemp("pageruns")
    tiny_labelled_run("layer4", root / "runs" / "r18", seed=2,
                      labels={u: ("tree", 0.3) for u in TREE_UNITS})
    rng = np.random.default_rng(0)
    for name in ("class_1", "class_2"):
        (root / "set" / name).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(root / "set" / name / f"{k}.png")
    return root


def _app(runs_root, monkeypatch, **state):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("DISSECT_RUNS", str(runs_root / "runs"))
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["run"] = "r18"
    at.session_state["layer"] = "layer4"
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def _frame(at, column):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _selected(at):
    return list(at.session_state["abl_units_layer4"])


def _top5(at) -> list[str]:
    """The markdown top-5 lists of the predictions panel."""
    return [m.value for m in at.markdown if m.value.startswith("**Top 5**")
            or m.value.startswith("**After ")]


def test_first_view_shows_a_probe_image_and_its_top5(runs_root, monkeypatch):
    at = _app(runs_root, monkeypatch)
    assert not at.exception and _selected(at) == []
    assert at.session_state["abl_pick"] == {"kind": "probe", "index": 0}
    (top,) = _top5(at)                                   # before only: nothing is ablated
    assert top.count("\n") >= 5 and "5. class " in top
    assert any("no units ablated" in c.value for c in at.caption)
    # thumbnails pick images: the probe gallery, then a sample photo
    at.button(key="abl_use_image_3").click().run()
    assert not at.exception and at.session_state["abl_pick"] == {"kind": "probe", "index": 3}
    assert any(c.value.endswith(".jpg") or "3" in c.value for c in at.caption)


def test_units_from_the_browser_reset_and_invert(runs_root, monkeypatch):
    at = _app(runs_root, monkeypatch, ablate_units={"layer": "layer4", "units": [1, 2, 3]})
    assert not at.exception
    assert _selected(at) == [1, 2, 3]
    assert any("3 of 512 units selected" in c.value for c in at.caption)
    assert at.query_params["units"] in ("1-3", ["1-3"])                    # kept in the shared link
    assert len(_top5(at)) == 2                                       # before and after
    assert at.session_state["abl_pick"]["kind"] == "probe"           # unit 1's top image
    assert at.button(key="abl_use_unit_1_1") is not None             # the units' top images first
    at.toggle(key="abl_tables").set_value(True).run()
    assert len(_frame(at, "before")) == 5 and len(_frame(at, "after")) == 5   # on a probe image
    assert {"class", "before", "after", "delta"} <= set(_frame(at, "delta").columns)
    at.button(key="abl_invert").click().run()
    assert not at.exception and len(_selected(at)) == 509 and 1 not in _selected(at)
    at.button(key="abl_reset").click().run()
    assert not at.exception and _selected(at) == []


def test_units_by_concept_and_set_accuracy(runs_root, monkeypatch, settle):
    at = _app(runs_root, monkeypatch)
    assert not at.exception
    assert any(o.startswith("tree (3 units)") for o in at.selectbox(key="abl_concept").options)
    at.selectbox(key="abl_concept").set_value("tree").run()
    at.button(key="abl_use_concept").click().run()
    assert _selected(at) == TREE_UNITS
    at.text_input(key="abl_set").set_value(f"folder:{runs_root / 'set'}").run()
    assert not at.exception
    settle(at)
    labels = [m.label for m in at.metric]
    assert "Accuracy before" in labels and "Accuracy after" in labels
    # class importance now works on that set
    at.button(key="abl_rank").click().run()
    settle(at)
    at.number_input(key="abl_imp_n").set_value(5).run()
    at.button(key="abl_use_imp").click().run()
    assert not at.exception and len(_selected(at)) == 5


def test_bad_set_and_mode_messages(runs_root, monkeypatch, settle):
    at = _app(runs_root, monkeypatch)
    at.text_input(key="abl_set").set_value(f"folder:{runs_root}").run()
    assert not at.exception
    settle(at)
    assert any("names a class" in e.value for e in at.error), [e.value for e in at.error] + [i.value for i in at.info]
    at.selectbox(key="abl_mode").set_value("mean").run()
    assert not at.exception


def test_control_curve_and_query_param(runs_root, monkeypatch, settle):
    from studio import background as bg
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("DISSECT_RUNS", str(runs_root / "runs"))
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["run"] = "r18"
    at.session_state["layer"] = "layer4"
    at.session_state["abl_set"] = f"folder:{runs_root / 'set'}"
    at.query_params["units"] = "7,8"
    at.run()
    assert not at.exception and _selected(at) == [7, 8]
    settle(at)
    if any(b.key == "abl_rank" for b in at.button):        # else: ranked by an earlier test
        at.button(key="abl_rank").click().run()
    settle(at)                                   # the importance ranking, in the background
    at.button(key="abl_control").click().run()
    assert not at.exception
    settle(at)
    curve = bg.find(("curve", *at.session_state["abl_curve"])).result
    assert {"n", "removed_top", "kept_top_only", "baseline"} <= set(curve.columns)


@pytest.mark.slow
def test_efficientnet_preset_on_a_sample_photo(runs_root, monkeypatch):
    """A real ImageNet network, offline: removing every conv_head unit makes the cat fall."""
    pytest.importorskip("timm")
    at = _app(runs_root, monkeypatch)
    at.selectbox(key="abl_model").set_value("efficientnet_lite0 (real ImageNet weights)").run()
    assert not at.exception
    assert at.session_state["abl_pick"] == {"kind": "sample", "name": "chelsea"}
    at.toggle(key="abl_tables").set_value(True).run()
    before = _frame(at, "before")
    assert before.iloc[0, 0] in ("tiger cat", "Egyptian cat", "tabby")
    at.button(key="abl_invert").click().run()          # select all 1280 units, zero them
    assert not at.exception
    after = _frame(at, "after")
    assert after.iloc[0, 0] not in ("tiger cat", "Egyptian cat", "tabby")


def test_unit_page_losses_and_ablate_in_the_lab(runs_root, monkeypatch, settle):
    """The unit page ranks the classes that lose accuracy without the unit (the importance
    ranking, shared with the lab), and one click opens the lab with that unit ablated."""
    from streamlit.testing.v1 import AppTest
    from dissect.interventions.labelled import SetCache, open_labelled_set
    from dissect.interventions.ablation import Intervention
    from dissect.models.registry import load_model
    monkeypatch.setenv("DISSECT_RUNS", str(runs_root / "runs"))
    at = AppTest.from_file(str(Path(PAGE).parent.parent / "app.py"), default_timeout=240)
    spec = f"folder:{runs_root / 'set'}"
    at.session_state["loss_set"] = spec
    for k, v in dict(run="r18", layer="layer4", unit=9).items():
        at.query_params[k] = str(v)
    at.run()
    at.switch_page("pages/unit_detail.py")
    at.run()
    assert not at.exception
    assert "What the network loses without this unit" in [s.value for s in at.subheader]
    if any(b.key == "loss_compute" for b in at.button):     # else: the lab ranked this set
        at.button(key="loss_compute").click().run()
        assert not at.exception
    settle(at)
    lm = load_model("resnet18", "none")
    real = SetCache(lm, open_labelled_set(spec, lm, limit=200), ["layer4"]).evaluate(
        [Intervention("layer4", (9,))]).classes.set_index("class")
    drop = real["acc_before"] - real["acc_after"]
    if (drop > 0).any():          # the chart lists the classes that really lost accuracy
        table = next(d.value for d in at.dataframe if "acc_drop" in d.value.columns)
        assert table["acc_drop"].iloc[0] == pytest.approx(drop.max())
    else:
        assert any("loses accuracy" in i.value for i in at.info)
    at.button(key="ablate_in_lab").click().run()
    assert not at.exception
    assert at.session_state["abl_units_layer4"] == [9]


def test_lab_steers_along_a_saved_direction(tmp_path, monkeypatch):
    """A direction saved under <runs>/directions/ is offered for its model and layer; steering
    along it changes the lab's "after" exactly as dissect.directions.steering does outside the app, and
    +sun raises ToyWorld's beach on a sea-and-boat scene without a sun."""
    from streamlit.testing.v1 import AppTest

    from dissect.interventions.ablation import ImageAblation
    from dissect.directions.concept import contrast_from_probe, fit, save_direction
    from dissect.models.registry import load_model
    from dissect.probes.registry import open_probe
    from dissect.directions.steering import SteerIntervention
    monkeypatch.setenv("DISSECT_RUNS", str(tmp_path / "runs"))
    lm = load_model("toyworld", "default")
    d = fit(contrast_from_probe(lm, open_probe("toyworld:200"), "sun", "conv6", "max"), "mean")
    d.model, d.weights = lm.name, str(lm.weights)
    save_direction(d, tmp_path / "runs" / "directions" / "sun-conv6")
    at = AppTest.from_file(PAGE, default_timeout=240)
    at.session_state["abl_model"] = "toyworld (scene CNN)"
    at.session_state["abl_layer_toyworld"] = "conv6"
    at.run()
    assert not at.exception
    assert at.selectbox(key="abl_steer").options == ["none", "sun-conv6 · sun (mean)"]
    at.selectbox(key="abl_steer").set_value("sun-conv6").run()
    at.slider(key="abl_alpha").set_value(8.0).run()
    assert not at.exception
    assert any("steered +8·σ along 'sun'" in c.value for c in at.caption)
    (_, after) = _top5(at)
    assert after.startswith("**After steering**")
    # the same image and edit outside the app
    from studio.lab import SAMPLES, sample_photo
    from PIL import Image
    x = lm.prepare(Image.fromarray(sample_photo(SAMPLES[0])))
    ref = ImageAblation(lm).compare(x, [SteerIntervention(d, 8.0)])
    top_class, p = ref.after[0]
    assert f"1. {top_class} · **{p:.1%}**" in after
    # known answer: +sun makes sea-and-boat scenes without a sun look like beaches
    from dissect.interventions.labelled import open_labelled_set
    from dissect.directions.presence import select
    from dissect.interventions.ablation import ablate
    import torch
    scenes = select(open_labelled_set("toyworld:300", lm), ["sea", "boat"], ["sun"])
    xs = torch.stack([scenes.load(i) for i in range(min(len(scenes), 16))])
    beach = lm.class_names.index("beach")
    with torch.no_grad():
        p0 = lm.model(lm.normalize(xs)).softmax(1)[:, beach].mean()
        with ablate(lm.model, [SteerIntervention(d, 8.0)]):
            p1 = lm.model(lm.normalize(xs)).softmax(1)[:, beach].mean()
    assert p1 > p0 + 0.3, (float(p0), float(p1))
