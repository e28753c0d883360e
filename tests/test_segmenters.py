"""Segmenters: the colour namer on patches and photos, merging, ground truth, ADE20K, registry."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from dissect.probes.synthetic_broden import COLORS as SB_COLORS
from dissect.probes.synthetic_broden import make_synthetic_broden
from segmenters import available_segmenters, make_segmenter
from segmenters.base import Segmentation, Segmenter, SegmenterError
from segmenters.color import TERMS, ColorNamer
from segmenters.groundtruth import BrodenGroundTruth
from segmenters.merged import MergedSegmenter

PATCHES = {  # RGB -> the basic term any English speaker gives it
    (255, 0, 0): "red", (200, 20, 30): "red", (0, 200, 0): "green", (0, 100, 0): "green",
    (0, 0, 255): "blue", (0, 0, 128): "blue", (135, 206, 235): "blue",
    (255, 255, 0): "yellow", (255, 215, 0): "yellow", (255, 140, 0): "orange",
    (255, 128, 0): "orange", (139, 69, 19): "brown", (120, 75, 40): "brown",
    (255, 192, 203): "pink", (255, 105, 180): "pink", (128, 0, 128): "purple",
    (140, 60, 200): "purple", (0, 0, 0): "black", (25, 25, 25): "black",
    (255, 255, 255): "white", (245, 245, 245): "white", (128, 128, 128): "grey",
    (90, 90, 90): "grey", (190, 190, 190): "grey",
}


@pytest.fixture(scope="module")
def namer() -> ColorNamer:
    return ColorNamer()


def test_colour_namer_names_pure_patches(namer):
    rgb = np.array(list(PATCHES), np.uint8)
    got = [TERMS[t] for t in namer.name_pixels(rgb)]
    wrong = {k: (want, g) for (k, want), g in zip(PATCHES.items(), got) if want != g}
    assert not wrong, wrong


def test_colour_namer_segments_a_patch_image_at_mask_size(namer):
    colours = list(PATCHES.items())[:16]
    img = np.zeros((4 * 56, 4 * 56, 3), np.uint8)   # 4×4 grid of 56-px patches
    for k, (rgb, _) in enumerate(colours):
        y, x = divmod(k, 4)
        img[y * 56:(y + 1) * 56, x * 56:(x + 1) * 56] = rgb
    [out] = namer.segment(img[None], mask_size=(112, 112))
    plane = out.pixel["color"]
    assert plane.shape == (1, 112, 112) and plane.dtype == np.int32
    assert plane.min() >= 1 and plane.max() <= len(TERMS)
    for k, (_, want) in enumerate(colours):     # patch centres, away from blended borders
        y, x = divmod(k, 4)
        assert TERMS[plane[0, y * 28 + 14, x * 28 + 14] - 1] == want


def _shares(namer, image) -> dict[str, float]:
    [out] = namer.segment(image[None], mask_size=(112, 112))
    counts = np.bincount(out.pixel["color"].ravel(), minlength=len(TERMS) + 1)[1:]
    return dict(zip(TERMS, counts / counts.sum()))


def test_colour_namer_on_photos(namer):
    cat = _shares(namer, skimage.data.chelsea())       # a ginger tabby on a grey background
    assert cat["brown"] + cat["orange"] > 0.5
    assert cat["green"] + cat["blue"] + cat["purple"] < 0.05
    coffee = _shares(namer, skimage.data.coffee())      # brown coffee, red-brown table
    assert coffee["brown"] + coffee["red"] + coffee["orange"] > 0.7
    rocket = _shares(namer, skimage.data.rocket())      # blue sky
    assert rocket["blue"] > 0.3


def test_colour_namer_agrees_with_planted_colours(tmp_path, namer):
    info = make_synthetic_broden(tmp_path / "sb", n=8, image_size=64, mask_size=32)
    gt = BrodenGroundTruth(info["dir"], categories=["color"])
    paths = [str(p) for p in gt.probe.images["path"]]
    from PIL import Image
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    ours = namer.segment(images, mask_size=(32, 32))
    truth = gt.segment(None, (32, 32), paths=paths)
    agree = total = 0
    for o, t in zip(ours, truth):
        t_names = np.array([""] + [n for n, _ in gt.concepts()])[t.pixel["color"][0]]
        o_names = np.array(TERMS)[o.pixel["color"][0] - 1]
        t_names = np.where(t_names == "gray", "grey", t_names)
        agree += (t_names == o_names).sum()
        total += t_names.size
    assert agree / total > 0.9, agree / total


def test_protocol_and_registry():
    assert isinstance(ColorNamer(), Segmenter)
    names = available_segmenters()
    assert {"color", "ade20k", "broden", "toyworld"} <= set(names)
    assert all(isinstance(d, str) and d for d in names.values())
    assert isinstance(make_segmenter("colour"), ColorNamer)
    both = make_segmenter("color,ade20k")      # the ADE20K model is only loaded to segment
    assert isinstance(both, MergedSegmenter) and len(both.concepts()) == 11 + 150
    with pytest.raises(SegmenterError, match="unknown segmenter 'sam'"):
        make_segmenter("color,sam")
    with pytest.raises(SegmenterError, match="listed twice"):
        make_segmenter("color,colour")
    with pytest.raises(SegmenterError, match="needs its folder"):
        make_segmenter("broden")


def test_merged_segmenter_keeps_ids_apart(tmp_path):
    info = make_synthetic_broden(tmp_path / "sb", n=6, image_size=64, mask_size=32)
    gt = BrodenGroundTruth(info["dir"])
    merged = MergedSegmenter([ColorNamer(), gt])
    concepts = merged.concepts()
    assert merged.offsets == [0, 11]
    assert len(concepts) == 11 + len(gt.concepts())
    assert concepts[:11] == ColorNamer().concepts()
    # a name both parts use in the same category is told apart
    assert ("red (broden)", "color") in concepts and ("red", "color") in concepts
    assert len(set(concepts)) == len(concepts)
    paths = [str(p) for p in gt.probe.images["path"]]
    from PIL import Image
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    out = merged.segment(images, (32, 32), paths=paths)
    for seg, path in zip(out, paths):
        colour = seg.pixel["color"]
        assert colour.shape[0] == 2                            # one plane from each part
        assert set(np.unique(colour[0])) <= set(range(1, 12))  # namer ids
        assert set(np.unique(colour[1])) - {0} <= set(range(12, 12 + len(gt.concepts())))
        own = gt.segment(None, (32, 32), paths=[path])[0]
        np.testing.assert_array_equal(colour[1], np.where(own.pixel["color"][0] > 0,
                                                          own.pixel["color"][0] + 11, 0))
        for cat in ("object", "scene"):
            ids = (seg.pixel.get(cat) if cat in seg.pixel else seg.scalar[cat])
            assert ids.max() > 11
            named = {concepts[i - 1][1] for i in np.unique(ids) if i}
            assert named <= {"object", "part", "scene"}


def test_broden_ground_truth_matches_the_reader(tmp_path):
    info = make_synthetic_broden(tmp_path / "sb", n=5, image_size=64, mask_size=32)
    gt = BrodenGroundTruth(info["dir"])
    probe = gt.probe
    table = probe.concepts.reset_index(drop=True)
    for i in range(len(probe)):
        item = probe[i]
        [seg] = gt.segment(None, (32, 32), paths=[probe.images["path"][i]])
        for cat, planes in item.pixel.items():   # same labels, renumbered to positions
            names = np.array([""] + list(table["name"]))
            ours = names[seg.pixel[cat]]
            theirs = np.vectorize(dict(zip(table["concept"], table["name"])).get,
                                  otypes=[object])(np.where(planes > 0, planes, -1))
            theirs = np.where(planes > 0, theirs, "")
            assert (ours == theirs).all()
        assert seg.scalar.keys() == item.scalar.keys()
    [nothing] = gt.segment(None, (32, 32), paths=[str(tmp_path / "elsewhere.jpg")])
    assert not nothing.pixel and not nothing.scalar
    [resized] = gt.segment(None, (16, 16), paths=[probe.images["path"][0]])
    assert resized.pixel["color"].shape[-2:] == (16, 16)


def test_segmentation_round_trip():
    seg = Segmentation(pixel={"color": np.arange(12, dtype=np.int32).reshape(1, 3, 4)},
                       scalar={"scene": np.array([70000, 3], np.int32)})
    back = Segmentation.from_arrays(seg.to_arrays())
    np.testing.assert_array_equal(back.pixel["color"], seg.pixel["color"])
    np.testing.assert_array_equal(back.scalar["scene"], seg.scalar["scene"])
    assert back.pixel["color"].dtype == np.int32


def test_bad_image_batch_is_a_clear_error(namer):
    with pytest.raises(SegmenterError, match="uint8 RGB images"):
        namer.segment(np.zeros((1, 8, 8, 3), np.float32), (4, 4))


def test_sb_palette_is_covered():
    assert set(SB_COLORS) - {"gray"} <= set(TERMS)


# -- ADE20K: the real transformers code path on a tiny random UPerNet, no download

def _tiny_upernet(folder, num_labels: int = 150) -> str:
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    backbone = ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_stages=4,
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_in_channels=32,
                           auxiliary_channels=16, num_labels=num_labels)
    import torch
    torch.manual_seed(0)
    UperNetForSemanticSegmentation(config).save_pretrained(folder)
    return str(folder)


def test_ade20k_class_names_are_the_150():
    from segmenters.ade20k import ade20k_classes
    names = ade20k_classes()
    assert len(names) == 150 == len(set(names))
    assert names[:3] == ["wall", "building", "sky"] and names[-1] == "flag"
    assert names[12] == "person" and names[138] == "ashcan"


def test_ade20k_segmenter_runs_a_saved_model(tmp_path):
    from segmenters.ade20k import ADE20KSegmenter
    seg = make_segmenter(f"ade20k:{_tiny_upernet(tmp_path / 'upernet')}")
    assert isinstance(seg, ADE20KSegmenter) and isinstance(seg, Segmenter)
    seg.input_size = 64                       # keep the random model cheap
    images = np.stack([np.asarray(skimage.data.chelsea()[:200, :200]),
                       np.asarray(skimage.data.coffee()[:200, :200])])
    out = seg.segment(images, mask_size=(28, 28))
    assert len(out) == 2
    for o in out:
        plane = o.pixel["object"]
        assert plane.shape == (1, 28, 28) and plane.dtype == np.int32
        assert plane.min() >= 1 and plane.max() <= 150
    assert seg.concepts()[0] == ("wall", "object") and len(seg.concepts()) == 150
    seg.release()
    again = seg.segment(images[:1], mask_size=(28, 28))          # reloads, same weights
    np.testing.assert_array_equal(again[0].pixel["object"], out[0].pixel["object"])


def test_ade20k_rejects_a_model_with_other_labels(tmp_path):
    from segmenters.ade20k import ADE20KSegmenter
    seg = ADE20KSegmenter(_tiny_upernet(tmp_path / "up10", num_labels=10), input_size=32)
    with pytest.raises(SegmenterError, match="10 classes, not ADE20K's 150"):
        seg.segment(np.zeros((1, 32, 32, 3), np.uint8), (16, 16))


def test_ade20k_offline_message_when_weights_are_absent(tmp_path, monkeypatch):
    import time
    from segmenters.ade20k import ADE20KSegmenter
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                                              # a hub nobody answers for
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)
    seg = ADE20KSegmenter("dissect-tests/no-such-upernet")   # never in any local cache
    start = time.monotonic()
    with pytest.raises(SegmenterError) as err:
        seg.segment(np.zeros((1, 32, 32, 3), np.uint8), (16, 16))
    assert time.monotonic() - start < 15                      # no network retries
    msg = str(err.value)
    assert "no weights for 'dissect-tests/no-such-upernet'" in msg and "no route to" in msg
    assert f"http://127.0.0.1:{port}/dissect-tests/no-such-upernet" in msg
    assert "save_pretrained" in msg and "--segmenter ade20k:" in msg and "\n" not in msg
    monkeypatch.setenv("DISSECT_OFFLINE", "1")
    with pytest.raises(SegmenterError, match=r"cannot download them: offline mode"):
        ADE20KSegmenter("dissect-tests/no-such-upernet").load()
    with pytest.raises(SegmenterError, match="no model folder"):
        ADE20KSegmenter(str(tmp_path / "missing"))
