"""dissect.runs.render: masks, overlays, segmentations and the on-disk picture cache."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dissect.runs import render
from dissect.runs.folder import open_run


def test_unit_mask_is_bilinear_half_pixel_and_strict():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(7, 7)).astype(np.float16)
    ref = F.interpolate(torch.from_numpy(raw.astype(np.float32))[None, None], size=(50, 60),
                        mode="bilinear", align_corners=False)[0, 0].numpy()
    t = float(np.quantile(ref, 0.8))
    mask = render.unit_mask(raw, t, (50, 60))
    assert mask.shape == (50, 60)
    np.testing.assert_array_equal(mask, ref > t)
    # strict: a constant map equal to the threshold has no active pixel
    assert not render.unit_mask(np.ones((3, 3)), 1.0, (9, 9)).any()


def test_overlay_dims_outside_by_netdissect_factor():
    img = np.full((10, 10, 3), 200, np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    out = render.overlay(img, mask, edge=None)
    assert (out[~mask] == 40).all()          # 200 × 0.2
    assert (out[mask] == 200).all()
    edged = render.overlay(img, mask)
    assert (edged[2, 2:8] == 255).all() and (edged[4, 4] == 200).all()


def test_segment_by_units_picks_unit_most_above_its_threshold():
    acts = np.zeros((2, 4, 4), np.float32)
    acts[0, :, :2] = 2.0      # unit 0: left half, 2× its threshold 1
    acts[1, :, 1:] = 9.0      # unit 1: right 3/4, 3× its threshold 3
    lab, win = render.segment_by_units(acts, np.array([1.0, 3.0]), np.array([11, 22]), (4, 4))
    assert (lab[:, 0] == 11).all() and (lab[:, 2:] == 22).all()
    assert (win[:, 0] == 0).all()
    empty, w = render.segment_by_units(acts * 0, np.array([1.0, 3.0]), np.array([11, 22]), (4, 4))
    assert (empty == 0).all() and (w == -1).all()


def test_label_planes_first_plane_wins_and_nearest_resize():
    planes = np.zeros((2, 2, 2), np.int32)
    planes[0, 0, 0] = 5
    planes[1, 0, 0] = 7
    planes[1, 1, 1] = 7
    lab = render.label_planes_to_map(planes, (4, 4))
    assert lab[0, 0] == 5 and lab[1, 1] == 5 and lab[3, 3] == 7 and lab[0, 3] == 0
    assert render.concept_mask(planes, 7, (4, 4))[0, 0]


def test_colours_are_stable_and_named():
    assert render.concept_color(3) == render.concept_color(3)
    assert render.concept_color(3) != render.concept_color(4)
    assert render.concept_color(9, "red") == render.NAMED_COLORS["red"]
    assert render.category_color("object") == render.CATEGORY_COLORS["object"]
    assert render.category_color("weird") == render.category_color("weird")


def test_run_renderer_overlays_are_cached_on_disk(engine_run, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(engine_run, run_dir, ignore=shutil.ignore_patterns("cache"))
    r = render.RunRenderer(open_run(run_dir))
    tk = r.topk("layer4")
    data = r.unit_overlay("layer4", 3, 0)
    im = np.asarray(Image.open(io.BytesIO(data)))
    # the overlay is the unit's top image with its mask applied
    img = r.image(int(tk["indices"][3, 0]))
    assert im.shape == img.shape
    files = list((run_dir / "cache").rglob("*.jpg"))
    assert len(files) == 1
    files[0].write_bytes(b"cached")      # the second call reads the file, never recomputes
    assert r.unit_overlay("layer4", 3, 0) == b"cached"
    strip = Image.open(io.BytesIO(r.unit_strip_jpeg("layer4", 5, n=4)))
    assert strip.height == 96 and strip.width > 3 * 96
    seg, ids = r.segmentation(0, "color")
    assert ids and Image.open(io.BytesIO(seg)).size == (96, 96)
    units = [0, 1, 2]
    png, counts = r.unit_segmentation("layer4", 0, units, [1, 2, 3])
    assert set(counts) <= {1, 2, 3}


def test_missing_image_falls_back_to_probe_then_placeholder(engine_run, tmp_path):
    run = open_run(engine_run)
    path = run.images.iloc[0]["path"]
    r = render.RunRenderer(run, cache_dir=tmp_path / "c")
    real = r.image(0)
    gone = render.RunRenderer(run, probe=lambda: (_ for _ in ()).throw(OSError("no probe")),
                              cache_dir=tmp_path / "d")
    gone.run = type("R", (), {"images": run.images.assign(path=str(tmp_path / "nope.jpg")),
                              "info": run.info, "path": run.path})()
    with pytest.raises(render.MissingImage, match="missing"):
        gone.image(0)
    assert gone.probe_error and "no probe" in gone.probe_error
    assert real.shape[2] == 3 and path
