"""The unit page's visualisation (studio/vis_view.py) through streamlit.testing: drawn on demand
as a cancellable background job, kept in <run>/cache/vis/, shown on the browser's cards and in
the export. A real ToyWorld dissection (conv6) is the run; the sun unit's picture is drawn."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dissect.visualize import VisConfig  # noqa: E402

FAST = VisConfig(steps=32, size=112)        # the page's own figure is 256 steps


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from dissect.__main__ import main
    root = tmp_path_factory.mktemp("visruns")
    assert main(["run", "--model", "toyworld", "--layer", "conv6", "--probe", "toyworld:120",
                 "--batch-size", "60", "--workers", "0", "--quiet", "--out",
                 str(root / "tw")]) == 0
    return root


@pytest.fixture(autouse=True)
def env(root, monkeypatch):
    monkeypatch.setenv("DISSECT_RUNS", str(root))
    import studio.vis_view as vv
    monkeypatch.setattr(vv, "STUDIO", FAST)


def page(name: str, unit: int | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / name), default_timeout=240)
    at.session_state["run"], at.session_state["layer"] = "tw", "conv6"
    if unit is not None:
        at.session_state["unit"] = unit
    return at.run()


def _draw_button(at, unit: int):
    return next(b for b in at.button if b.key == f"vis_draw_conv6_{unit}")


def test_draw_on_demand_then_kept(root, settle):
    at = page("unit_detail.py", unit=3)
    assert not at.exception
    assert any(s.value == "What it wants to see" for s in at.subheader)
    _draw_button(at, 3).click().run()
    assert not at.exception
    at = settle(at)
    assert not at.exception
    words = [m.value for m in at.markdown if "best natural image" in m.value]
    assert words and "seeds" in words[0], [m.value for m in at.markdown]
    png = root / "tw" / "cache" / "vis" / "conv6" / "unit_3.png"
    assert png.is_file() and (png.with_suffix(".json")).is_file()
    from dissect.visualize.cache import cached, cached_units
    assert cached_units(root / "tw", "conv6") == {3} and cached(root / "tw", "conv6", 3)
    # a new session finds it kept: no button, the picture at once
    again = page("unit_detail.py", unit=3)
    assert not again.exception and not [b for b in again.button if b.key == "vis_draw_conv6_3"]
    assert any("best natural image" in m.value for m in again.markdown)
    # the browser's card shows it; the export zips it
    cards = page("unit_browser.py")
    assert not cards.exception
    captions = [i.caption for e in cards.get("image") for i in e.proto.imgs]
    assert captions.count("what it wants to see") == 1, captions
    from dissect.visualize.cache import zip_visualisations
    import io
    import zipfile
    names = zipfile.ZipFile(io.BytesIO(zip_visualisations(root / "tw"))).namelist()
    assert "vis/conv6/unit_3.png" in names and "vis/conv6/unit_3.json" in names
    exp = page("export.py")
    assert not exp.exception


def test_cancel_keeps_nothing(root):
    from studio import background as bg
    at = page("unit_detail.py", unit=7)
    _draw_button(at, 7).click().run()
    (job,) = [j for j in bg.running() if j.key[0] == "vis" and 7 in j.key]
    job.cancel()
    assert job.wait(120) and job.state == "cancelled"
    at.run()
    assert not at.exception
    assert any("cancelled" in i.value for i in at.info)
    assert not (root / "tw" / "cache" / "vis" / "conv6" / "unit_7.png").exists()
    retry = next(b for b in at.button if b.key.startswith("job-retry"))
    retry.click().run()
    assert not at.exception and _draw_button(at, 7) is not None


@pytest.mark.slow
def test_directions_page_draws_the_direction(tmp_path, monkeypatch, settle):
    """The Directions page's Picture tab: the sun direction's image, drawn in the background,
    raises p(beach) + p(sky) of the ToyWorld CNN above a grey canvas's."""
    import io
    import numpy as np
    import torch
    from PIL import Image
    from dissect.models.registry import load_model
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(str(REPO / "pages" / "directions.py"), default_timeout=600).run()
    at.text_input(key="dir_probe").set_value("toyworld:60")
    at.button(key="dir_compute").click().run()
    assert not at.exception
    at.button(key="dir_vis_go").click().run()
    at = settle(at)
    assert not at.exception
    assert any("seeds" in m.value for m in at.markdown), [m.value for m in at.markdown]
    from studio import background as bg
    (job,) = [j for j in bg._JOBS.values() if j.key[0] == "visdir"]
    img = np.asarray(Image.open(io.BytesIO(job.result["png_bytes"])).convert("RGB"))
    lm = load_model("toyworld")
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    grey = torch.full_like(x, 0.5)
    with torch.no_grad():
        p = lm.model(lm.normalize(torch.cat([x, grey]))).softmax(1)
    names = lm.class_names
    sunny = p[:, names.index("beach")] + p[:, names.index("sky")]
    print("p(beach)+p(sky): sun direction image, grey canvas", sunny.tolist())
    assert sunny[0] > sunny[1] + 0.2, sunny
