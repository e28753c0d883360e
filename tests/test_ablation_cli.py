"""python -m dissect ablate: JSON shapes as DESIGN.md fixes them, --concept from a run, bad input."""
import json

import numpy as np
import pytest
from PIL import Image

from dissect.__main__ import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("class_1", "Class-2"):
        (root / "set" / name).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8)).save(root / "set" / name / f"{k}.png")
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), np.uint8)).save(root / "a.png")
    (root / "notes.txt").write_text("not an image")
    return root


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_images_json_shape(photos, capsys):
    assert main(["ablate", "--model", "resnet18", "--weights", "none", "--layer", "layer4", "--units", "1,2,5-9",
                 "--mode", "scale=0", "--images", str(photos / "a.png"), "--json"]) == 0
    out = _json(capsys)
    assert len(out["images"]) == 1
    img = out["images"][0]
    assert img["path"] == str(photos / "a.png")
    assert len(img["before"]) == 5 and set(img["before"][0]) == {"class", "p"}
    assert len(img["after"]) == 5 and img["after"][0]["p"] > 0
    assert out["intervention"]["units"] == [1, 2, 5, 6, 7, 8, 9]


def test_set_json_shape_and_text(photos, capsys):
    args = ["ablate", "--model", "resnet18", "--weights", "none", "--layer", "layer4", "--units", "0-127",
            "--set", f"folder:{photos / 'set'}"]
    assert main(args + ["--json"]) == 0
    out = _json(capsys)
    assert {"acc_before", "acc_after", "classes"} <= set(out)
    assert sorted(c["class"] for c in out["classes"]) == ["class 1", "class 2"]
    assert set(out["classes"][0]) == {"class", "n", "acc_before", "acc_after", "balanced_before",
                                      "balanced_after"}
    assert main(args + ["--mode", "mean", "--rank", "3"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "class 1" in text and "most important units" in text


@pytest.mark.parametrize("extra,needle", [
    (["--units", "512", "--images", "IMG"], "out of range"),
    (["--units", "1", "--layer", "layer9", "--images", "IMG"], "Did you mean"),
    (["--units", "1", "--images", "NOTES"], "not an image"),
    (["--units", "1", "--set", "folder:SET_PARENT"], "names a class"),
    (["--units", "1", "--mode", "half", "--images", "IMG"], "--mode"),
    (["--concept", "tree", "--images", "IMG"], "--run"),
])
def test_bad_input_is_one_clear_line(photos, capsys, extra, needle):
    extra = [e.replace("NOTES", str(photos / "notes.txt")).replace("IMG", str(photos / "a.png"))
             .replace("SET_PARENT", str(photos)) if e not in ("--images",) else e for e in extra]
    args = ["ablate", "--model", "resnet18", "--weights", "none", "--layer", "layer4"] + extra
    if "--layer" in extra:
        args = ["ablate", "--model", "resnet18", "--weights", "none"] + extra
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_labelled_run):
    tree = {u: ("tree", 0.3) for u in (4, 9, 200)}                # three units labelled tree
    return tiny_labelled_run("layer3", tmp_path_factory.mktemp("ablrun") / "run", seed=1,
                             labels={**tree, 5: ("tree", 0.01)})   # 5: below the 0.04 cut

def test_concept_picks_units_from_the_run(run_folder, photos, capsys):
    assert main(["ablate", "--run", str(run_folder), "--concept", "Tree", "--images",
                 str(photos / "a.png"), "--json"]) == 0
    out = _json(capsys)
    assert out["intervention"]["units"] == [4, 9, 200] and out["intervention"]["layer"] == "layer3"
    assert main(["ablate", "--run", str(run_folder), "--concept", "sky", "--images",
                 str(photos / "a.png")]) == 2
    assert "labelled 'sky'" in capsys.readouterr().err


def test_rank_and_control_json(photos, capsys):
    assert main(["ablate", "--model", "resnet18", "--weights", "none", "--layer", "layer4", "--units", "0",
                 "--set", f"folder:{photos / 'set'}", "--rank", "2", "--rank-by", "logit",
                 "--control", "1,3", "--json"]) == 0
    out = _json(capsys)
    assert set(out["importance"]) == {"class 1", "class 2"}
    assert all(len(v) == 2 and all(0 <= u < 512 for u in v) for v in out["importance"].values())
    assert [r["n"] for r in out["control"]] == [1, 3]
    assert set(out["control"][0]) == {"n", "removed_top", "kept_top_only", "baseline"}


def test_several_layers_at_once(photos, capsys):
    import torch
    from dissect.interventions.ablation import Intervention, ablate, image_tensor
    from dissect.models.registry import load_model
    assert main(["ablate", "--model", "resnet18", "--weights", "none", "--units", "layer3:1-40", "--units", "layer4:7",
                 "--units", "layer3:41", "--mode", "scale=3", "--images", str(photos / "a.png"),
                 "--json"]) == 0
    out = _json(capsys)
    assert out["intervention"]["interventions"] == [
        {"layer": "layer3", "units": list(range(1, 42))}, {"layer": "layer4", "units": [7]}]
    lm = load_model("resnet18", "none")
    x = image_tensor(lm, str(photos / "a.png"))
    ivs = [Intervention("layer3", tuple(range(1, 42)), "scale", 3.0),
           Intervention("layer4", (7,), "scale", 3.0)]
    with ablate(lm.model, ivs), torch.no_grad():
        p = lm.model(lm.normalize(x[None])).softmax(1)[0]
    assert out["images"][0]["after"][0]["p"] == pytest.approx(float(p.max()), rel=1e-4)
    assert main(["ablate", "--model", "resnet18", "--weights", "none", "--units", "3", "--images",
                 str(photos / "a.png")]) == 2
    assert "say which layer" in capsys.readouterr().err
