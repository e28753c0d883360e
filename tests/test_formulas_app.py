"""Formulas in the studio (AppTest): unit detail shows the formula beside the label, draws it on
the top images and says when it fell back; the unit browser finds units by formula."""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="module")
def root(engine_run, tmp_path_factory) -> Path:
    from dissect.formulas.explain import explain_run
    root = tmp_path_factory.mktemp("formula_runs")
    run = root / "r18"
    shutil.copytree(engine_run, run, ignore=shutil.ignore_patterns("cache"))
    explain_run(run, ["layer4"], length=3, beam=5, units=range(6))
    return root


@pytest.fixture(autouse=True)
def runs_env(root, monkeypatch):
    monkeypatch.setenv("DISSECT_RUNS", str(root))


def _app(page: str, **params) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning")
                     for e in getattr(at, kind))


def _n_images(at) -> int:
    return len(at.get("imgs")) + len(at.get("image"))


def _units(root) -> pd.DataFrame:
    return pd.read_csv(root / "r18" / "layers" / "layer4" / "units.csv", keep_default_na=False)


def test_unit_detail_shows_formula_and_its_mask(root):
    df = _units(root)
    row = df.iloc[0]
    at = _app("pages/unit_detail.py", run="r18", layer="layer4", unit=0)
    text = _texts(at)
    assert f"Formula **`{row['formula']}`**" in text
    assert f"beside the single label **{row['label']}**" in text
    assert at.toggle(key="show_formula").value
    with_formula = _n_images(at)
    at.toggle(key="show_formula").set_value(False).run()
    assert _n_images(at) == with_formula - 5      # the top 5 with the formula drawn
    fell = df[(df["unit"] < 6) & (df["formula_fallback"].astype(str) == "True")
              & (df["formula_searched"] != df["formula"])]
    if len(fell):
        u = int(fell.iloc[0]["unit"])
        at = _app("pages/unit_detail.py", run="r18", layer="layer4", unit=u)
        assert "Fell back to the single label" in _texts(at)
    none = _app("pages/unit_detail.py", run="r18", layer="layer3", unit=0)
    assert "python -m dissect explain" in _texts(none)


def test_unit_browser_finds_units_by_formula(root):
    from dissect.formulas.grammar import mentions
    df = _units(root)
    names = pd.read_csv(root / "r18" / "concepts.csv", keep_default_na=False)["name"].tolist()
    concept = sorted(mentions(df.iloc[0]["formula"], names))[0]
    want = {int(u) for u, f in zip(df["unit"], df["formula"]) if concept in mentions(f, names)}
    at = _app("pages/unit_browser.py", run="r18", layer="layer4")
    at.text_input(key="browser_formula").set_value(concept).run()
    cards = {int(re.match(r"unit (\d+) · ", pl.proto.label).group(1))
             for pl in at.get("page_link") if re.match(r"unit \d+ · ", pl.proto.label)}
    assert cards == want and 0 in cards
    assert at.query_params["fm"] == concept
    at.text_input(key="browser_formula").set_value("skyy").run()
    assert "unknown concept 'skyy': did you mean sky" in _texts(at)
