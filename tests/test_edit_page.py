"""The Edit page through AppTest: exemplars with masks, a finished rewrite's held-out table
beside fine-tuning and its whole-world figure beside the protocol's (made by the real CLI), and
a finished trace's charts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dissect.__main__ import main

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="module")
def edits(tmp_path_factory):
    root = tmp_path_factory.mktemp("edits")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("DISSECT_CACHE", str(cache))
    assert main(["rewrite", "--model", "toyworld", "--layer", "conv6", "--concept", "sea",
                 "--style", "snow", "--exemplars", "1", "--class", "beach", "--heldout", "24",
                 "--heldout-styles", "snow", "--probe-images", "20", "--baseline", "finetune",
                 "--finetune-steps", "3", "--world-images", "40", "--out", str(root / "sea-snow-conv6-beach-1-r1")]) == 0
    assert main(["trace", "--model", "toyworld", "--concept", "sun", "--probe", "toyworld:200",
                 "--seed", "1000", "--limit", "2", "--corrupt", "noise", "--layers", "conv6",
                 "--out", str(root / "traces" / "trace-sun-noise-2-conv6.json")]) == 0
    mp.undo()
    return root


def test_edit_page_shows_exemplars_results_and_traces(edits, tmp_path, monkeypatch):
    monkeypatch.setenv("DISSECT_EDITS", str(edits))
    monkeypatch.setenv("DISSECT_RUNS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/edit.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Edit"
    at.number_input(key="ed_n").set_value(1).run()
    assert not at.exception, [e.value for e in at.exception]
    body = "\n".join(str(e.value) for e in at.success)
    assert "weights.safetensors" in body and "original file is untouched" in body
    assert len(at.dataframe) >= 1
    assert any("Clean accuracy" in m.label for m in at.metric)
    labels = [m.label for m in at.metric]          # the two measures, side by side
    assert "Protocol: errors corrected" in labels
    assert "Whole unseen world: style-caused errors corrected" in labels
    assert any("--restyle sea:snow --seed 3000" in c.value for c in at.caption)
    at.number_input(key="tr_n").set_value(2).run()
    at.multiselect(key="tr_layers").set_value(["conv6"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("showing sun" in c.value for c in at.caption)
