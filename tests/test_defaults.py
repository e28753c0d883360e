"""Defaults that mean what people expect: trained weights unless `--weights none`, stamped."""
from __future__ import annotations

import json

import pytest

from dissect.__main__ import main
from dissect.models.registry import load_model, resolve_weights, run_random_init


def test_resolve_weights():
    assert resolve_weights("toyworld", None) == "default"
    assert resolve_weights("efficientnet_lite0", None) == "DEFAULT"
    assert resolve_weights("resnet18", "") == "DEFAULT"
    assert resolve_weights("resnet18", "default") == "DEFAULT"
    assert resolve_weights("net.py:build", None) == "none"
    assert resolve_weights("resnet18", "none") == "none"
    assert resolve_weights("resnet18", "IMAGENET1K_V1") == "IMAGENET1K_V1"


def test_presets_load_trained_weights_unless_none():
    eff = load_model("efficientnet_lite0")
    assert eff.weights == "DEFAULT" and not eff.random_init
    rand = load_model("efficientnet_lite0", "none")
    assert rand.random_init
    w_trained = eff.model.conv_stem.weight
    assert not w_trained.equal(rand.model.conv_stem.weight)
    toy = load_model("toyworld")
    assert toy.weights == "default" and not toy.random_init


def test_run_json_stamps_random_init(engine_run, tmp_path):
    info = json.loads((engine_run / "run.json").read_text())
    assert info["random_init"] is True and info["config"]["weights"] == "none"
    assert run_random_init(info)
    out = tmp_path / "toy"
    assert main(["run", "--model", "toyworld", "--layer", "conv6", "--probe", "toyworld:12",
                 "--batch-size", "6", "--workers", "0", "--quiet", "--topk", "2",
                 "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["random_init"] is False and info["config"]["weights"] == "default"
    assert not run_random_init(info)
    assert run_random_init({"config": {"model": "resnet18", "weights": "none"}})  # older runs


def test_ablate_set_without_units_reports_accuracy_only(capsys):
    args = ["ablate", "--model", "toyworld", "--set", "toyworld:60", "--seed", "7", "--json"]
    assert main(args) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["intervention"]["interventions"] == []
    assert trained["intervention"]["random_init"] is False
    assert trained["acc_before"] == trained["acc_after"] > 0.6
    assert sum(c["n"] for c in trained["classes"]) == 60
    assert all(c["acc_before"] == c["acc_after"] for c in trained["classes"])
    assert main(args + ["--weights", "none"]) == 0
    cap = capsys.readouterr()
    rand = json.loads(cap.out)
    assert rand["intervention"]["random_init"] is True and "random weights" in cap.err
    assert rand["acc_before"] < trained["acc_before"] - 0.3


def test_ablate_images_still_need_units(tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (40, 40), "red").save(tmp_path / "a.png")
    assert main(["ablate", "--model", "toyworld", "--images", str(tmp_path / "a.png")]) == 2
    assert "choose units" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_one_clear_line(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc = main(["ablate", "--model", "toyworld", "--set", "toyworld:4", "--device", "cuda"])
    assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_layers_of_a_torchvision_name_need_no_download(tmp_path, monkeypatch, capsys):
    """The docs' first command (docs/dissection.md), `layers --model resnet18`, works offline with an empty
    $TORCH_HOME: shapes do not depend on the weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("DISSECT_OFFLINE", "1")
    assert main(["layers", "--model", "resnet18", "--json"]) == 0
    layers = {l["name"]: l for l in json.loads(capsys.readouterr().out)}
    assert layers["layer4"]["shape"] == [512, 7, 7] and layers["layer4"]["spatial"]
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*.pth"))
    assert main(["layers", "--model", "resnet18", "--weights", "DEFAULT"]) != 0   # explicit: tried
