"""The Directions page through streamlit.testing: a direction, readout chart, TCAV bars, steering
before/after and a dose-response chart on a small ToyWorld world, then save and export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "directions.py")

pytestmark = pytest.mark.slow


def test_directions_page_end_to_end(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("DISSECT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "runs").mkdir()
    at = AppTest.from_file(PAGE, default_timeout=600).run()
    assert not at.exception
    assert any("Compute direction" in i.value for i in at.info)
    at.text_input(key="dir_probe").set_value("toyworld:60")
    at.button(key="dir_compute").click().run()
    assert not at.exception, at.exception
    at.text_input(key="dir_set").set_value("toyworld:60").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    auroc = float(next(m.value for m in at.metric if m.label == "held-out AUROC"))
    assert auroc > 0.8
    assert len(at.get("plotly_chart")) == 0
    at.button(key="dir_read_go").click().run()
    assert not at.exception and len(at.get("plotly_chart")) == 1   # the readout line chart
    at.text_input(key="dir_tcav_concepts").set_value("sun,sea")   # 60 images: few checkered
    at.button(key="dir_tcav_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 2
    at.text_input(key="dir_with").set_value("sea")
    at.button(key="dir_dose_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3                     # + dose-response
    frames = [d.value for d in at.dataframe if "after" in d.value.columns]
    assert frames and len(frames[0]) == 5
    at.text_input(key="dir_save_name").set_value("../escape").run()
    at.button(key="dir_save").click().run()
    assert any("no slashes" in e.value for e in at.error)
    at.text_input(key="dir_save_name").set_value("sun-conv6").run()
    at.button(key="dir_save").click().run()
    saved = tmp_path / "runs" / "directions" / "sun-conv6"
    assert (saved / "direction.json").is_file() and (saved / "direction.safetensors").is_file()
    assert json.loads((saved / "direction.json").read_text())["concept"] == "sun"


def test_directions_page_refuses_sets_too_big_for_the_server(tmp_path, monkeypatch):
    """The page computes in the server: a toyworld:100000 probe or set is refused by name at
    once (never built), like the ablation lab's."""
    import time
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("DISSECT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "runs").mkdir()
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    t = time.monotonic()
    at.text_input(key="dir_probe").set_value("toyworld:100000")
    at.button(key="dir_compute").click().run()
    assert not at.exception
    assert any("over the limit of 5,000" in e.value for e in at.error), [e.value for e in at.error]
    assert time.monotonic() - t < 30 and not (tmp_path / "cache" / "toyworld").exists()
