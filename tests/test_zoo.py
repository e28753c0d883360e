"""The zoos: timm:NAME and hf:ORG/NAME load, list layers, download from a local hub, fail offline.

Never the internet: random init, a hub stand-in on 127.0.0.1 (tests/localhub.py), a tiny
transformers ViT saved with save_pretrained, and DISSECT_OFFLINE=1 for the offline lines.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dissect.errors import ModelError
from dissect.models.registry import layer_info, list_layers, load_model
from localhub import serve_hub

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """huggingface_hub's cache in tmp_path/hub; returns a function pointing it at an endpoint."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)

    def point(endpoint: str) -> None:       # what HF_ENDPOINT does when huggingface_hub starts
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    return point


def _layers(lm) -> dict:
    return {i.name: i for i in list_layers(lm)}


# ---- timm ---------------------------------------------------------------------------------

def test_timm_vit_random_init_lists_token_blocks():
    lm = load_model("timm:vit_tiny_patch16_224", "none", seed=3)
    again = load_model("timm:vit_tiny_patch16_224", "none", seed=3)
    assert torch.equal(lm.model.head.weight, again.model.head.weight)      # seeded
    assert lm.random_init and lm.name == "timm:vit_tiny_patch16_224"
    assert lm.mean == (0.5, 0.5, 0.5) and lm.input_size == 224           # timm's data config
    assert lm.interpolation == "bicubic" and lm.resize_size == int(224 / 0.9)
    assert len(lm.class_names) == 1000 and lm.class_names[281] == "tabby"
    layers = _layers(lm)
    assert layers["blocks.11"].shape == (192, 14, 14) and layers["blocks.11"].layout == "tokens"
    assert layers["head"].shape == (1000,) and layers["head"].layout == "vector"
    assert layer_info(lm, "blocks.11").layout == "tokens"


def test_timm_resnet_and_swin_random_init():
    r = load_model("timm:resnet18", "none")
    info = _layers(r)["layer4"]
    assert info.shape == (512, 7, 7) and info.spatial and info.layout == "nchw"
    assert r.mean == (0.485, 0.456, 0.406) and r.resize_size == int(224 / 0.95)
    s = load_model("timm:swin_tiny_patch4_window7_224", "none")
    layers = _layers(s)
    assert layers["layers.3"].shape == (768, 7, 7) and layers["layers.3"].layout == "nhwc"
    assert layers["patch_embed.proj"].layout == "nchw"
    logits = s.model(s.normalize(torch.rand(1, 3, 224, 224)))
    assert logits.shape == (1, 1000)


def test_timm_checkpoint_loads_strictly(tmp_path):
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(9)
    ref = timm.create_model("resnet18", num_classes=7)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "r.safetensors")
    lm = load_model("timm:resnet18", str(tmp_path / "r.safetensors"))
    assert not lm.random_init and lm.class_names == [f"class {i}" for i in range(7)]
    assert torch.equal(lm.model.fc.weight, ref.fc.weight)
    with pytest.raises(ModelError, match="do not fit"):
        load_model("timm:resnet34", str(tmp_path / "r.safetensors"))


def test_timm_bad_names_give_the_nearest():
    with pytest.raises(ModelError) as e:
        load_model("timm:resnet81", "none")
    msg = str(e.value)
    assert "is not a timm model" in msg and "timm:resnet18" in msg and "\n" not in msg
    with pytest.raises(ModelError, match=r"no pretrained tag 'a1_in1kk'.*timm:resnet18\.a1_in1k"):
        load_model("timm:resnet18.a1_in1kk", "none")
    with pytest.raises(ModelError, match="vit_tiny_patch16_224"):
        load_model("timm:vit_tiny_patch16_244", "none")
    with pytest.raises(ModelError, match="means nothing for timm:resnet18"):
        load_model("timm:resnet18", "IMAGENET1K_V1")


def test_timm_hub_download_loads_the_served_weights(hub_env, tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save
    torch.manual_seed(5)
    served = timm.create_model("resnet18")
    data = save({k: v.contiguous() for k, v in served.state_dict().items()})
    with serve_hub({"timm/resnet18.a1_in1k": {"model.safetensors": data}}) as hub:
        hub_env(hub.endpoint)
        lm = load_model("timm:resnet18")                 # default: the trained weights
        assert not lm.random_init and lm.meta["hub_repo"] == "timm/resnet18.a1_in1k"
        for k, v in served.state_dict().items():
            assert torch.equal(lm.model.state_dict()[k], v), k
        assert ("GET", "/timm/resnet18.a1_in1k/resolve/main/model.safetensors") in hub.requests
        cached = list((tmp_path / "hub" / "models--timm--resnet18.a1_in1k").rglob("model.safetensors"))
        assert cached and cached[0].read_bytes() == data
        n = len(hub.requests)
        monkeypatch.setenv("DISSECT_OFFLINE", "1")      # the cache serves it, with no request
        again = load_model("timm:resnet18", "DEFAULT")
        assert torch.equal(again.model.fc.weight, served.fc.weight) and len(hub.requests) == n


def test_timm_offline_is_one_line_naming_file_cache_and_url(hub_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DISSECT_OFFLINE", "1")
    t = time.monotonic()
    with pytest.raises(ModelError) as e:
        load_model("timm:resnet18")
    assert time.monotonic() - t < 5
    msg = str(e.value)
    assert "\n" not in msg and "offline mode" in msg and "model.safetensors" in msg
    assert str(tmp_path / "hub" / "models--timm--resnet18.a1_in1k") in msg
    assert "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors" in msg
    assert "--weights none" in msg


def test_timm_no_route_fails_within_seconds(hub_env, tmp_path):
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nothing listens there now
    hub_env(f"http://127.0.0.1:{port}")
    t = time.monotonic()
    with pytest.raises(ModelError, match=r"no route to 127\.0\.0\.1.*model\.safetensors"):
        load_model("timm:vit_tiny_patch16_224")
    assert time.monotonic() - t < 5


# ---- transformers -------------------------------------------------------------------------

@pytest.fixture
def tiny_vit(tmp_path):
    """A tiny ViTForImageClassification (32 px, 3 labels) saved with save_pretrained: (folder, model)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "sun"}
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=32, id2label=labels,
                    label2id={v: k for k, v in labels.items()})
    model = ViTForImageClassification(cfg).eval()
    folder = tmp_path / "tiny-vit"
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, resample=3).save_pretrained(folder)
    return folder, model


def test_hf_folder_loads_and_classifies(tiny_vit):
    folder, ref = tiny_vit
    lm = load_model(f"hf:{folder}")
    assert lm.class_names == ["cat", "dog", "sun"] and not lm.random_init
    assert lm.mean == (0.5, 0.5, 0.5) and lm.input_size == 32 and lm.interpolation == "bicubic"
    x = torch.rand(4, 3, 32, 32)
    logits = lm.model(lm.normalize(x))
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 3)
    with torch.no_grad():
        want = ref(pixel_values=lm.normalize(x)).logits
    assert torch.allclose(logits, want, atol=1e-6)
    assert [n for n, _ in lm.model.named_modules()] == [n for n, _ in ref.named_modules()]
    layers = _layers(lm)
    assert layers["vit.layers.1"].shape == (16, 4, 4) and layers["vit.layers.1"].layout == "tokens"
    assert layers["classifier"].shape == (3,)
    assert "vit" not in layers          # a ModelOutput, not a tensor: not listed
    with pytest.raises(ModelError, match=r"on a 64×64 input failed.*try --size 32"):
        list_layers(lm, 64)             # a ViT's input size is fixed
    assert all(not m._forward_hooks for m in lm.model.modules())      # no hook outlives it


def test_hf_random_init_from_the_config(tiny_vit):
    folder, ref = tiny_vit
    a, b = load_model(f"hf:{folder}", "none", seed=1), load_model(f"hf:{folder}", "none", seed=1)
    assert a.random_init and torch.equal(a.model.classifier.weight, b.model.classifier.weight)
    assert not torch.equal(a.model.classifier.weight, ref.classifier.weight)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, folder / "w.safetensors")
    c = load_model(f"hf:{folder}", str(folder / "w.safetensors"))     # a checkpoint on the config
    assert not c.random_init and torch.equal(c.model.classifier.weight, ref.classifier.weight)
    with pytest.raises(ModelError, match="means nothing for hf:"):
        load_model(f"hf:{folder}", "IMAGENET1K_V1")


def test_hf_hub_download_through_a_local_endpoint(hub_env, tiny_vit, monkeypatch):
    folder, ref = tiny_vit
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    with serve_hub({"toy-org/tiny-vit": files}) as hub:
        hub_env(hub.endpoint)
        lm = load_model("hf:toy-org/tiny-vit")
        assert torch.equal(lm.model.classifier.weight, ref.classifier.weight)
        assert lm.class_names == ["cat", "dog", "sun"] and lm.input_size == 32
        with pytest.raises(ModelError) as e:
            load_model("hf:toy-org/tiny-vti")
        msg = str(e.value)
        assert "not a model on the Hugging Face hub" in msg and "hf:toy-org/tiny-vit" in msg
        n = len(hub.requests)
        monkeypatch.setenv("DISSECT_OFFLINE", "1")      # cached config and weights: no request
        again = load_model("hf:toy-org/tiny-vit")
        assert torch.equal(again.model.classifier.weight, ref.classifier.weight)
        assert len(hub.requests) == n


def test_hf_not_an_image_classifier(tmp_path):
    from transformers import BertConfig
    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelError) as e:
        load_model(f"hf:{tmp_path / 'bert'}", "none")
    msg = str(e.value)
    assert "'bert' model" in msg and "not an image classifier" in msg and "\n" not in msg


def test_hf_offline_and_bad_folder(hub_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DISSECT_OFFLINE", "1")
    t = time.monotonic()
    with pytest.raises(ModelError) as e:
        load_model("hf:google/vit-base-patch16-224")
    assert time.monotonic() - t < 5
    msg = str(e.value)
    assert "\n" not in msg and "offline mode" in msg and "config.json" in msg
    assert str(tmp_path / "hub" / "models--google--vit-base-patch16-224") in msg
    assert "https://huggingface.co/google/vit-base-patch16-224/resolve/main/config.json" in msg
    (tmp_path / "tiny-vit").mkdir()
    with pytest.raises(ModelError, match=r"neither a folder nor a hub id.*Nearest in .*tiny-vit"):
        load_model(f"hf:{tmp_path / 'tiny-vti'}")


# ---- torchvision transformers and the command line ----------------------------------------

def test_torchvision_vit_layers_are_tokens():
    lm = load_model("vit_b_16", "none")
    info = layer_info(lm, "encoder.layers.encoder_layer_11")
    assert info.shape == (768, 14, 14) and info.layout == "tokens" and info.spatial   # a map
    swin = load_model("swin_t", "none")
    assert layer_info(swin, "features.7").layout == "nhwc"
    maxvit = load_model("maxvit_t", "none")
    window = "blocks.0.layers.0.layers.window_attention.partition_op"
    assert layer_info(maxvit, window).layout == "other"         # (64 windows, 49, 64): no grid
    assert layer_info(maxvit, "blocks.3").layout == "nchw"


def test_cli_layers_json_marks_layouts(capsys):
    import json
    from dissect.__main__ import main
    assert main(["layers", "--model", "timm:vit_tiny_patch16_224", "--json"]) == 0   # no download
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["blocks.11"]["shape"] == [192, 14, 14] and rows["blocks.11"]["layout"] == "tokens"
    assert rows["patch_embed.proj"]["layout"] == "nchw" and rows["patch_embed.proj"]["spatial"]


@pytest.mark.slow
def test_cli_offline_line_names_hf_home(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    env.pop("DISSECT_OFFLINE", None)
    p = subprocess.run([sys.executable, "-m", "dissect", "layers", "--model",
                        "timm:vit_tiny_patch16_224", "--weights", "default", "--offline"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert str(tmp_path / "hf" / "hub" / "models--timm--vit_tiny_patch16_224") in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.slow
def test_cli_run_on_a_timm_cnn(tmp_path):
    import json
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "dissect", "run", "--model", "timm:resnet18",
                        "--weights", "none", "--layer", "layer4", "--probe", "toyworld:20",
                        "--workers", "0", "--quiet", "--out", str(tmp_path / "run")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["model"] == "timm:resnet18" and info["random_init"]
    assert (tmp_path / "run" / "layers" / "layer4" / "units.csv").is_file()
