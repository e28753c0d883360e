"""Comparing runs (dissect.runs.compare) on real engine runs, and the Compare page through AppTest."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dissect.runs.compare import (Item, comparable, format_selection, label_changes, overview,
                             parse_selection, per_category)
from dissect.runs.folder import open_run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="module")
def items(engine_run, second_run):
    a, b = open_run(engine_run), open_run(second_run)
    return [Item("r18", a, "layer4"), Item("r18s1", b, "layer4"), Item("r18", a, "layer3")]


def test_selection_round_trips_through_the_url_form(items):
    text = format_selection(items)
    assert text == "r18:layer4,r18s1:layer4,r18:layer3"
    assert parse_selection(text) == [("r18", "layer4"), ("r18s1", "layer4"), ("r18", "layer3")]
    assert parse_selection("junk,,:x,a:") == []


def test_counts_agree_with_each_runs_units_table(items):
    per = per_category(items)
    summary = overview(items)
    for it in items:
        units = pd.read_csv(it.run.path / "layers" / it.layer / "units.csv", keep_default_na=False)
        interp = units[units["iou"] >= it.threshold]
        got = per[per["item"] == it.key].set_index("category")["interpretable"]
        want = interp.groupby("category").size()
        assert got[got > 0].to_dict() == want.to_dict()
        row = summary[summary["item"] == it.key].iloc[0]
        assert row["units"] == len(units) and row["interpretable"] == len(interp)
        assert row["unique_concepts"] == interp["label"].nunique()


def test_label_changes_unit_by_unit(items):
    a, b, other = items
    assert comparable(a, b) and not comparable(a, other)
    ch = label_changes(a, b)
    assert len(ch) == 512 and list(ch["unit"]) == list(range(512))
    ua = pd.read_csv(a.run.path / "layers/layer4/units.csv", keep_default_na=False)
    la = ua["label"].where(ua["iou"] >= a.threshold, "")
    assert (ch["label_a"] == la).all()
    assert set(ch["change"]) <= {"same", "relabelled", "gained", "lost"}
    assert (ch[ch["change"] == "same"]["label_a"] == ch[ch["change"] == "same"]["label_b"]).all()
    same = label_changes(a, Item("copy", a.run, "layer4"))
    assert (same["change"] == "same").all()
    with pytest.raises(ValueError, match="not the same model and layer"):
        label_changes(a, other)


def test_compare_page_two_runs_from_the_url(engine_run, second_run, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    for run in (engine_run, second_run):
        shutil.copytree(run, root / run.name, ignore=shutil.ignore_patterns("cache"))
    monkeypatch.setenv("DISSECT_RUNS", str(root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["sel"] = "r18:layer4,r18s1:layer4,nosuch:layer9"
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Compare runs"
    assert at.multiselect(key="cmp_sel").value == ["r18:layer4", "r18s1:layer4"]
    assert any("nosuch:layer9" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 3
    assert at.query_params["sel"] == ["r18:layer4,r18s1:layer4"] or \
        at.query_params["sel"] == "r18:layer4,r18s1:layer4"
    assert [m.label for m in at.metric] == ["same", "relabelled", "gained", "lost"]
    assert sum(int(m.value) for m in at.metric) == 512
    at.multiselect(key="cmp_sel").set_value(["r18:layer3", "r18:layer4"]).run()
    assert not at.exception
    assert not at.metric          # different layers: no unit-by-unit table
