"""The folder probe: any image folder, labelled by segmenters, cached, corrupt files skipped."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from dissect.errors import ProbeError
from dissect.probes.registry import open_probe
from dissect.probes.types import probe_loader
from dissect.probes.synthetic_broden import make_synthetic_broden
from segmenters.color import ColorNamer
from segmenters.folder import FolderProbe

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry"]


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Five bundled photos in train/ and val/, plus a corrupt and a truncated file."""
    d = tmp_path / "photos"
    for k, name in enumerate(PHOTOS):
        sub = d / ("val" if k % 2 else "train")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(getattr(skimage.data, name)()).save(sub / f"{name}.jpg", quality=90)
    (d / "train" / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    whole = (d / "train" / "chelsea.jpg").read_bytes()
    (d / "val" / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_probe_labels_photos_and_skips_corrupt(photos, tmp_path):
    probe = open_probe(f"folder:{photos}", segmenter="color", cache_dir=tmp_path / "cache")
    assert isinstance(probe, FolderProbe)
    assert len(probe) == 5 and probe.skipped == 2
    assert {Path(p).name for p in probe.skipped_paths} == {"corrupt.jpg", "truncated.jpg"}
    assert list(probe.images.columns[:5]) == ["index", "path", "split", "width", "height"]
    assert set(probe.images["split"]) == {"train", "val"}
    assert probe.categories == probe.pixel_categories == ["color"] and probe.mask_size == (112, 112)
    assert list(probe.concepts["name"]) == [n for n, _ in ColorNamer().concepts()]
    chelsea = probe.images.index[probe.images["path"].str.endswith("chelsea.jpg")][0]
    assert (probe.images.loc[chelsea, ["width", "height"]] == [451, 300]).all()
    item = probe[int(chelsea)]
    assert item.image.shape == (3, 224, 224) and 0 <= item.image.min() <= item.image.max() <= 1
    plane = item.pixel["color"]
    assert plane.shape == (1, 112, 112)
    shares = np.bincount(plane.ravel(), minlength=12) / plane.size
    assert shares[3] + shares[6] > 0.5          # brown + orange: the cat's fur
    batch = next(iter(probe_loader(probe, batch_size=4, workers=1)))
    assert batch.images.shape == (4, 3, 224, 224) and batch.pixel["color"].shape == (4, 1, 112, 112)


def test_second_open_reads_the_cache(photos, tmp_path, monkeypatch, capfd):
    cache = tmp_path / "cache"
    first = FolderProbe(photos, segmenter="color", cache_dir=cache, progress=False)
    entries = sorted(cache.rglob("*.npz"))
    assert len(entries) == 5
    calls = []
    original = ColorNamer.segment
    monkeypatch.setattr(ColorNamer, "segment",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    again = FolderProbe(photos, segmenter="color", cache_dir=cache, progress=False)
    assert not calls                                   # nothing segmented the second time
    assert again.skipped == 2 and "on an earlier open" in capfd.readouterr().err
    np.testing.assert_array_equal(first[0].pixel["color"], again[0].pixel["color"])
    shutil.copy(photos / "train" / "chelsea.jpg", photos / "val" / "chelsea-copy.jpg")
    third = FolderProbe(photos, segmenter="color", cache_dir=cache, progress=False)
    assert len(third) == 6 and not calls               # same content: same cache entry
    assert len(list((cache / "segments" / "hashes").glob("*.json"))) == 1
    Image.fromarray(skimage.data.coffee()).save(photos / "train" / "chelsea.jpg")   # new bytes
    fourth = FolderProbe(photos, segmenter="color", cache_dir=cache, progress=False)
    assert len(calls) == 1 and len(fourth) == 6        # the changed file alone, segmented again
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "envcache"))
    two = FolderProbe(photos, segmenter="color", progress=False, limit=2, seed=3)
    assert len(two) == 2 and len(calls) > 1            # a new cache folder: segmented again
    assert len(list((tmp_path / "envcache").rglob("*.npz"))) == 2


def test_split_limit_and_categories(photos, tmp_path):
    cache = tmp_path / "cache"
    val = FolderProbe(photos, split="val", cache_dir=cache, progress=False)
    assert set(val.images["split"]) == {"val"} and len(val) == 2 and val.skipped == 1
    a = FolderProbe(photos, limit=3, seed=1, cache_dir=cache, progress=False)
    b = FolderProbe(photos, limit=3, seed=1, cache_dir=cache, progress=False)
    assert len(a) == 3 and list(a.images["path"]) == list(b.images["path"])
    assert list(a.images["path"]) == sorted(a.images["path"])
    with pytest.raises(ProbeError, match="splits are the first-level folders: train, val"):
        FolderProbe(photos, split="test", cache_dir=cache, progress=False)
    with pytest.raises(ProbeError, match="gives no category object; choose from: color"):
        FolderProbe(photos, categories="object", cache_dir=cache, progress=False)
    with pytest.raises(ProbeError, match="does not exist"):
        FolderProbe(tmp_path / "nowhere", cache_dir=cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeError, match="no images"):
        FolderProbe(tmp_path / "empty", cache_dir=cache)
    with pytest.raises(ProbeError, match="unknown segmenter"):
        FolderProbe(photos, segmenter="colr", cache_dir=cache)


def test_merged_with_ground_truth_keeps_ids_apart(tmp_path):
    info = make_synthetic_broden(tmp_path / "sb", n=6, image_size=64, mask_size=32)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in Path(info["dir"], "images").glob("img*.jpg"):
        shutil.copy(p, imgs / p.name)                  # matched to the folder by file name
    probe = FolderProbe(imgs, segmenter=f"color,broden:{info['dir']}", size=64,
                        cache_dir=tmp_path / "cache", progress=False)
    assert probe.mask_size == (32, 32) and len(probe) == 6
    assert probe.concepts["concept"].is_unique
    colour_ids = set(range(1, 12))
    for i in range(len(probe)):
        item = probe[i]
        namer, truth = item.pixel["color"]
        assert set(np.unique(namer)) <= colour_ids
        assert not (set(np.unique(truth)) & colour_ids)
        assert item.scalar["scene"].min() > 11
    by_id = probe.concepts.set_index("concept")
    assert by_id.loc[int(truth.max()), "category"] == "color"


def test_run_folder_end_to_end(photos, tmp_path):
    """python -m dissect run ... --probe folder:DIR --segmenter color writes a complete run."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", DISSECT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "dissect", "run", "--model", "resnet18", "--weights", "none",
         "--layer", "layer4", "--probe", f"folder:{photos}", "--segmenter", "color",
         "--batch-size", "4", "--workers", "0", "--threads", "1", "--quiet", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["counts"]["images"] == 5 and info["counts"]["skipped_images"] == 2
    assert info["config"]["probe_options"]["segmenter"] == "color"
    concepts = pd.read_csv(out / "concepts.csv")
    assert set(concepts["category"]) == {"color"} and "brown" in set(concepts["name"])
    images = pd.read_csv(out / "images.csv")
    assert len(images) == 5 and not images["path"].str.contains("corrupt|truncated").any()
    units = pd.read_csv(out / "layers" / "layer4" / "units.csv")
    assert len(units) == 512 and set(units["category"].dropna()) <= {"color"}
    iou = np.load(out / "layers" / "layer4" / "iou.npy")
    assert iou.shape == (512, len(concepts)) and np.isfinite(iou).all()


def test_toyworld_ground_truth_beside_the_colour_namer(tmp_path):
    """folder:<world>/images with color,toyworld:N — masks are not photos, ids stay apart."""
    from segmenters import make_segmenter
    gt = make_segmenter("toyworld:12", cache_dir=tmp_path / "tw")
    assert gt.name == "toyworld" and {"object", "scene"} <= set(gt.categories)
    probe = FolderProbe(gt.directory / "images", segmenter=f"color,toyworld:{gt.directory}",
                        cache_dir=tmp_path / "cache", progress=False)
    assert len(probe) == 12 and probe.skipped == 0      # mask PNGs were not taken as photos
    names = dict(zip(probe.concepts["concept"], probe.concepts["name"]))
    agree = total = 0
    for i in range(len(probe)):
        item = probe[i]
        ours, truth = item.pixel["color"]
        assert item.pixel["object"].max() > 11 and item.scalar["scene"].min() > 11
        known = truth > 0
        got = np.array([names[v] for v in ours[known]])
        want = np.array([names[v].split(" (")[0] for v in truth[known]])
        agree += (got == want).sum()
        total += known.sum()
    assert agree / total > 0.6, agree / total            # cyan and textures differ by design


def test_folder_probe_with_a_model_segmenter(tmp_path):
    """color + ADE20K (a tiny random UPerNet saved locally): ids apart, model freed, cached."""
    from test_segmenters import _tiny_upernet
    model = _tiny_upernet(tmp_path / "upernet")
    photos = tmp_path / "two"
    photos.mkdir()
    for name in ("chelsea", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
    spec = f"color,ade20k:{model}"
    probe = FolderProbe(photos, segmenter=spec, size=64, cache_dir=tmp_path / "c", progress=False)
    assert probe.categories == ["color", "object"] and len(probe.concepts) == 161
    assert probe.segmenter.parts[1]._model is None           # workers never carry the model
    item = probe[1]
    assert item.pixel["object"].shape == (1, 32, 32)
    assert 12 <= item.pixel["object"].min() and item.pixel["object"].max() <= 161
    assert set(np.unique(item.pixel["color"])) <= set(range(1, 12))
    assert len(list((tmp_path / "c" / "segments").glob("ade20k-*/512x32/*/*.npz"))) == 2
    again = FolderProbe(photos, segmenter=spec, size=64, cache_dir=tmp_path / "c", progress=False)
    assert again.segmenter.parts[1]._model is None            # all cached: never loaded
    np.testing.assert_array_equal(again[1].pixel["object"], item.pixel["object"])
    only = FolderProbe(photos, segmenter=spec, categories="object", size=64,
                       cache_dir=tmp_path / "c", progress=False)
    assert list(only[0].pixel) == ["object"] and set(only.concepts["category"]) == {"object"}


def test_unwritable_cache_is_a_clear_error(photos, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(ProbeError, match="set DISSECT_CACHE to a writable folder"):
        FolderProbe(photos, cache_dir=blocker, progress=False)
