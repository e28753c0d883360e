"""The Broden reader on generated Broden-format folders."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dissect.probes.broden import BrodenProbe
from dissect.errors import ProbeError
from dissect.probes.registry import open_probe
from dissect.probes.types import probe_loader
from dissect.probes.synthetic_broden import OBJECT_BASE, make_synthetic_broden


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    d = tmp_path_factory.mktemp("broden")
    info = make_synthetic_broden(d, n=30, image_size=48, mask_size=24, seed=2)
    return d, info


def test_tables_and_sizes(broden):
    d, info = broden
    p = open_probe(f"broden:{d}")
    assert isinstance(p, BrodenProbe) and len(p) == 30
    assert p.categories == ["color", "object", "part", "scene"]
    assert p.pixel_categories == ["color", "object", "part"] and p.scalar_categories == ["scene"]
    assert p.mask_size == (24, 24) and p.image_size == (48, 48)
    assert list(p.images.columns) == ["index", "path", "split", "width", "height"]
    assert p.images.path.iloc[0].endswith("images/img00000.jpg")
    assert (p.concepts.concept > 0).all()            # label 0 is never a concept


def test_primary_category_is_largest_coverage(broden):
    d, info = broden
    c = BrodenProbe(d).concepts.set_index("name")
    # 'window' is in c_object.csv and c_part.csv; part covers more
    assert c.loc["window", "category"] == "part"
    assert c.loc["car", "category"] == "object" and c.loc["red", "category"] == "color"
    assert c.loc["beach", "category"] == "scene"


def test_item_decoding_planes_and_image_level(broden):
    d, info = broden
    p = BrodenProbe(d)
    idx = pd.read_csv(d / "index.csv", keep_default_na=False)
    multi = int(np.flatnonzero(idx.object.str.contains(";"))[0])
    item = p[multi]
    assert item.image.shape == (3, 48, 48) and 0 <= item.image.min() and item.image.max() <= 1
    assert item.pixel["object"].shape[0] == idx.object[multi].count(";") + 1
    # label = R + 256·G: object numbers are above 255
    objs = set(np.unique(item.pixel["object"])) - {0}
    assert objs and all(o >= OBJECT_BASE for o in objs)
    png = np.asarray(Image.open(d / "images" / idx.object[multi].split(";")[0]).convert("RGB"))
    np.testing.assert_array_equal(item.pixel["object"][0], png[..., 0] + 256 * png[..., 1].astype(int))
    two = int(np.flatnonzero(idx.scene.astype(str).str.contains(";"))[0])
    assert p[two].scalar["scene"].tolist() == [int(v) for v in idx.scene[two].split(";")]


def test_options_categories_split_limit(broden):
    d, _ = broden
    p = BrodenProbe(d, categories="part,scene", split="train", limit=7)
    assert p.categories == ["part", "scene"] and len(p) == 7
    assert (p.images.split == "train").all()
    assert set(p.concepts.category) == {"part", "scene"}
    only_part = BrodenProbe(d, categories=["part"])
    idx = pd.read_csv(d / "index.csv", keep_default_na=False)
    assert len(only_part) == int((idx.part != "").sum())   # images without data are left out
    item = only_part[0]
    assert set(item.pixel) == {"part"} and not item.scalar


def test_labels_only_and_loader(broden):
    d, _ = broden
    p = BrodenProbe(d, limit=6)
    p.decode_images = False
    assert p[0].image.numel() == 0
    p.decode_images = True
    batch = next(iter(probe_loader(p, batch_size=6, workers=0)))
    assert batch.images.shape == (6, 3, 48, 48)
    assert batch.pixel["color"].shape == (6, 1, 24, 24) and batch.scalar["scene"].shape[0] == 6


def test_unknown_category_and_split(broden):
    d, _ = broden
    with pytest.raises(ProbeError, match="choose from: color, object, part, scene"):
        BrodenProbe(d, categories="texture")
    with pytest.raises(ProbeError, match="splits there: train, val"):
        BrodenProbe(d, split="test")
