"""ToyWorld --restyle CONCEPT:STYLE: same scenes, one concept repainted (real renders, real model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dissect.__main__ import main
from dissect.errors import ProbeError
from dissect.probes.registry import open_probe
from dissect.toyworld.generate import render
from dissect.toyworld.model import load_toyworld
from dissect.toyworld.styles import STYLES, StyleError, parse_restyle
from dissect.toyworld.world import OBJECTS, SCENE_NAMES

SEA = OBJECTS.index("sea") + 1


def _sea_images(seed: int, count: int) -> list[int]:
    return [i for i in range(count) if SEA in render(seed, i).obj]


@pytest.mark.parametrize("style", sorted(STYLES))
def test_restyle_repaints_only_the_concept(style):
    i = _sea_images(2, 12)[0]
    a, b = render(2, i), render(2, i, restyle=f"sea:{style}")
    mask = a.obj == SEA
    assert np.array_equal(a.obj, b.obj) and np.array_equal(a.part, b.part) and a.scene == b.scene
    assert np.array_equal(a.rgb[~mask], b.rgb[~mask])            # nothing else moves
    changed = np.any(a.rgb != b.rgb, axis=-1)[mask].mean()
    assert changed > 0.8, f"{style}: only {changed:.0%} of the sea repainted"
    assert np.array_equal(b.rgb, render(2, i, restyle=f"sea:{style}").rgb)   # seeded


def test_snow_sea_is_labelled_white():
    i = _sea_images(2, 12)[0]
    b = render(2, i, restyle="sea:snow")
    white = list(__import__("dissect.toyworld.world", fromlist=["COLORS"]).COLORS).index("white") + 1
    assert (b.color[b.obj == SEA] == white).mean() > 0.6


def test_bad_restyle_names_the_choices():
    with pytest.raises(StyleError, match="snow, wood, gravel, flowers, grayscale"):
        parse_restyle("sea:ice")
    with pytest.raises(StyleError, match="choose an object"):
        parse_restyle("ocean:snow")
    with pytest.raises(StyleError, match="CONCEPT:STYLE"):
        parse_restyle("snow")
    assert len(STYLES) >= 4 and "snow" in STYLES


def test_restyled_probe_is_its_own_cached_world(tmp_path):
    plain = open_probe("toyworld:6", seed=3, cache_dir=tmp_path)
    snowy = open_probe("toyworld:6", seed=3, cache_dir=tmp_path, restyle="sea:snow")
    assert plain.directory != snowy.directory and "restyle-sea-snow" in snowy.directory.name
    assert list(plain.images["path"].map(lambda p: p.split("/")[-1])) == \
        list(snowy.images["path"].map(lambda p: p.split("/")[-1]))
    with pytest.raises(ProbeError, match="ToyWorld probes only"):
        open_probe(f"broden:{tmp_path}", restyle="sea:snow")


def test_restyled_sea_is_often_misclassified():
    """Known answer the rewrite builds on: the clean model loses most snowy-sea scenes."""
    lm = load_toyworld()
    seed, idx = 1000, _sea_images(1000, 60)
    clean = [render(seed, i) for i in idx]
    snowy = [render(seed, i, restyle="sea:snow") for i in idx]
    y = np.array([s.scene for s in clean])
    with torch.no_grad():
        def pred(samples):
            x = torch.from_numpy(np.stack([s.rgb for s in samples])).permute(0, 3, 1, 2) / 255.0
            return lm.model(lm.normalize(x.float())).argmax(1).numpy()
        p0, p1 = pred(clean), pred(snowy)
    sea_classes = [SCENE_NAMES.index(c) for c in ("beach", "harbor", "lake")]
    m = np.isin(y, sea_classes) & (p0 == y)
    assert m.sum() >= 10
    assert (p1[m] == y[m]).mean() < 0.6, "snowy sea should break most sea scenes"


def test_cli_ablate_takes_restyle(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path))
    assert main(["ablate", "--model", "toyworld", "--weights", "default", "--set", "toyworld:12",
                 "--seed", "7", "--restyle", "sea:snow", "--layer", "conv6", "--units", "1",
                 "--json"]) == 0
    assert (tmp_path / "toyworld" / "seed7_n12_restyle-sea-snow" / "index.csv").is_file()
    assert main(["ablate", "--model", "toyworld", "--weights", "default", "--set", "toyworld:12",
                 "--restyle", "sea:ice", "--layer", "conv6", "--units", "1"]) == 2
    assert "snow, wood" in capsys.readouterr().err
