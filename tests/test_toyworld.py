"""ToyWorld generator, Broden format, probe cache, model and CLI (fast, real)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dissect.probes.broden import BrodenProbe
from dissect.errors import ProbeError
from dissect.probes.registry import open_probe
from dissect.toyworld import toyworld_probe, world_dir
from dissect.toyworld.broden_writer import build_world
from dissect.toyworld.generate import render, render_batch, render_parallel
from dissect.toyworld.model import DEFAULT_WEIGHTS, ToyWorldCNN, load_toyworld
from dissect.toyworld.world import OBJECTS, RANGES, SCENE_NAMES, SCENES

REPO = Path(__file__).resolve().parents[1]
# measured 0.913 on 600 images of world 4242 (docs/toyworld.md); assert with a margin
MIN_SMALL_WORLD_ACC = 0.85


def test_render_is_deterministic_by_seed_and_index():
    a, b = render(3, 17), render(3, 17)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.obj, b.obj) and a.scene == b.scene
    c = render(4, 17)
    assert not np.array_equal(a.rgb, c.rgb)
    assert a.rgb.shape == (224, 224, 3) and a.rgb.dtype == np.uint8


def test_parallel_batches_equal_serial():
    x1, y1 = render_batch(5, 10, 6)
    x2, y2 = render_parallel(5, 16, workers=2, chunk=8)
    assert np.array_equal(x1, x2[10:16]) and np.array_equal(y1, y2[10:16])
    assert x1.shape == (6, 3, 112, 112)


def test_scene_is_exactly_its_visible_object_set():
    """Every defining object shows; no other scene's full object set does."""
    for i in range(120):
        s = render(11, i)
        present = {OBJECTS[k - 1] for k in np.unique(s.obj) if k}
        name = SCENE_NAMES[s.scene]
        assert set(SCENES[name]) <= present, (i, name, present)
        others = [o for o in SCENE_NAMES if o != name and set(SCENES[o]) <= set(s.objects)]
        assert others == [], (i, name, others)


def test_scenes_are_balanced_and_near_misses_common():
    ys = [render(12, i) for i in range(270)]
    counts = np.bincount([s.scene for s in ys], minlength=len(SCENE_NAMES))
    assert counts.min() >= 15
    near = 0
    for s in ys:
        objs = set(s.objects)
        own = SCENE_NAMES[s.scene]
        near += any(len(set(SCENES[o]) - objs) == 1 for o in SCENE_NAMES if o != own)
    assert near / len(ys) > 0.5


def test_broden_folder_reads_back(tmp_path):
    out = build_world(tmp_path / "w", 12, seed=2, workers=1)
    header = (out / "index.csv").read_text().splitlines()[0]
    assert header == "image,split,ih,iw,sh,sw,color,object,part,material,scene,texture"
    assert (out / "category.csv").read_text().startswith("name,first,last,count,frequency")
    assert (out / "label.csv").read_text().startswith("number,name,category,frequency,coverage")
    probe = BrodenProbe(out)
    assert probe.pixel_categories == ["color", "object", "part", "texture"]
    assert probe.scalar_categories == ["scene"]
    assert probe.mask_size == (112, 112) and len(probe) == 12
    import pandas as pd
    labels = pd.read_csv(out / "label.csv")
    per_cat = labels.category.str.replace(r"\(\d+\)", "", regex=True).value_counts()
    assert per_cat["object"] >= 15 and per_cat["part"] >= 6 and per_cat["texture"] >= 5
    assert per_cat["color"] >= 8 and per_cat["scene"] >= 8
    # every concept the reader finds keeps its own category (labels absent here are left out)
    own = dict(zip(labels.number, per_cat.index.to_series().reindex(labels.category.str.replace(
        r"\(\d+\)", "", regex=True)).values))
    assert all(own[c] == cat for c, cat in zip(probe.concepts.concept, probe.concepts.category))
    for i in (0, 7):
        s, item = render(2, i), probe[i]
        assert np.array_equal((item.image.permute(1, 2, 0).numpy() * 255).round(), s.rgb)
        obj = item.pixel["object"][0]
        expect = np.where(s.obj[::2, ::2] > 0, s.obj[::2, ::2] + RANGES["object"][0] - 1, 0)
        assert np.array_equal(obj, expect)
        assert item.scalar["scene"].tolist() == [RANGES["scene"][0] + s.scene]
    with pytest.raises(ProbeError, match="already exists"):
        build_world(out, 3)


def test_toyworld_probe_builds_once_and_caches(tmp_path):
    p1 = toyworld_probe(10, seed=1, cache_dir=tmp_path)
    d = world_dir(10, 1, tmp_path)
    assert p1.directory == d.resolve() and (d / "index.csv").is_file()
    stamp = (d / "index.csv").stat().st_mtime_ns
    p2 = open_probe("toyworld:10", seed=1, cache_dir=tmp_path, categories=["object", "scene"],
                    limit=4)
    assert (d / "index.csv").stat().st_mtime_ns == stamp
    assert len(p2) == 4 and p2.categories == ["object", "scene"]
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")]   # no temp left
    with pytest.raises(ProbeError):
        toyworld_probe(0, cache_dir=tmp_path)


def test_model_shapes_and_size():
    lm = load_toyworld("none", "cpu")
    assert lm.class_names == SCENE_NAMES and lm.input_size == 224
    from dissect.models.hooks import capture
    with torch.no_grad(), capture(lm.model, ["conv5", "conv6"]) as acts:
        out = lm.model(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, len(SCENE_NAMES))
    assert acts["conv6"].shape[-2:] == (14, 14) and acts["conv5"].shape[-2:] == (14, 14)
    n = sum(p.numel() for p in ToyWorldCNN().parameters())
    assert n * 4 <= 5e6


def test_default_weights_and_sidecar():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size <= 5e6
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert meta["classes"] == SCENE_NAMES and meta["heldout"]["accuracy"] >= 0.9
    assert meta["heldout"]["seed"] != meta["config"]["seed"]
    lm = load_toyworld("default", "cpu")
    assert lm.mean == tuple(meta["mean"]) and lm.meta["config"]["images"] > 0


def test_default_model_accuracy_on_unseen_world():
    from dissect.toyworld.train import evaluate
    lm = load_toyworld("default", "cpu")
    acc, per = evaluate(lm.model, seed=4242, count=600)
    assert acc >= MIN_SMALL_WORLD_ACC, (acc, per)


def test_loaded_model_on_224_images_matches_112_fast_path():
    """The model pools 224 px inputs itself: the probe path equals the training path."""
    lm = load_toyworld("default", "cpu")
    s = render(77, 3)
    from dissect.toyworld.generate import pool2
    x224 = torch.from_numpy(s.rgb).permute(2, 0, 1)[None].float() / 255
    x112 = torch.from_numpy(pool2(s.rgb)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        a, b = lm.model(lm.normalize(x224)), lm.model(lm.normalize(x112))
    assert torch.allclose(a, b, atol=0.05)


def test_bad_weights_file_is_a_clear_error(tmp_path):
    from dissect.errors import ModelError
    with pytest.raises(ModelError, match="not found"):
        load_toyworld(str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="not a ToyWorld CNN"):
        load_toyworld(str(bad))


def test_cli_build_and_existing_folder(tmp_path):
    cmd = [sys.executable, "-m", "dissect", "toyworld", "build", "--n", "5", "--workers", "1",
           "--out", str(tmp_path / "w")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(BrodenProbe(tmp_path / "w")) == 5
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr


def test_default_run_is_fast_when_a_run_exists(tmp_path):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"format_version": 1, "status": "complete"}))
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "dissect", "default-run", "--runs",
                        str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "complete" in r.stderr
    assert time.time() - t < 20


def test_training_is_reproducible(tmp_path):
    from dissect.toyworld.model import load_state
    from dissect.toyworld.train import TrainConfig, train
    cfg = TrainConfig(images=640, epochs=1, batch_size=64, seed=9, eval_images=30, workers=1,
                      threads=1)
    m1 = train(cfg, tmp_path / "a.safetensors", log=lambda s: None)
    m2 = train(cfg, tmp_path / "b.safetensors", log=lambda s: None)
    a, b = load_state(tmp_path / "a.safetensors"), load_state(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert m1["heldout"] == m2["heldout"]
    assert json.loads((tmp_path / "a.json").read_text())["config"]["seed"] == 9
