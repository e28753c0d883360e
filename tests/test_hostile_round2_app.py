"""Hardening, round 2 (issue 21), in the app through AppTest: one hostile folder breaks no
page, and no page imports code that a folder names without asking (studio.lab)."""
from __future__ import annotations

import ast
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.test_hostile_round2 import _bad_run, _direction, run18, runs  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- 3. no page imports code unasked
def _evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "IMPORTED"
    evil = tmp_path / "net.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\nimport torchvision\n"
                    "def build():\n    return torchvision.models.resnet18()\n")
    return evil, marker


def test_directions_page_asks_before_importing_a_runs_model_file(runs, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    evil, marker = _evil(tmp_path)
    info = json.loads((runs / "good" / "run.json").read_text())
    info["config"]["model"] = f"{evil}:build"
    (runs / "good" / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("DISSECT_RUNS", str(runs))
    at = AppTest.from_file(str(REPO / "pages" / "directions.py"), default_timeout=240)
    at.session_state["run"] = "good"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(str(evil) in w.value and "runs it inside this server" in w.value
               for w in at.warning)
    assert not marker.exists()
    at.button(key="abl_trust_file").click().run()
    assert marker.exists()                       # only after the user confirmed


def test_every_load_model_reachable_from_a_page_is_guarded():
    """Walk pages/ and studio/: each load_model call passes allow_file (the confirmation)."""
    calls = []
    for f in sorted([*(REPO / "pages").glob("*.py"), *(REPO / "studio").glob("*.py")]):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id",
                                                      getattr(node.func, "attr", "")) == "load_model":
                calls.append((f.name, node.lineno, {k.arg for k in node.keywords}))
    assert calls, "no load_model call found"
    assert all("allow_file" in kw for _f, _l, kw in calls), calls


# ---------------------------------------------------------------- the app: one bad folder breaks nothing
def _app(root: Path, monkeypatch, run: str, page: str | None = None):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("DISSECT_RUNS", str(root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["run"] = run
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


@pytest.mark.parametrize("how", ["dir", "fifo", "zero"])
def test_one_hostile_run_json_breaks_no_page(runs, monkeypatch, how):
    _bad_run(runs, "bad", how)
    for run, page in (("good", None), ("good", "pages/unit_browser.py"), ("bad", None),
                      ("bad", "pages/unit_browser.py")):
        t = time.monotonic()
        at = _app(runs, monkeypatch, run, page)
        assert not at.exception, [e.value for e in at.exception]
        assert time.monotonic() - t < 60
        if run == "bad":
            assert "cannot be read" in at.title[0].value
            assert not any(str(runs) in e.value for e in at.error)
        else:
            assert "cannot be read" not in at.title[0].value


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_in_units_csv_break_no_page(runs, monkeypatch, value):
    import pandas as pd
    bad = runs / "bad"
    shutil.copytree(runs / "good", bad)
    units = bad / "layers" / "layer4" / "units.csv"
    df = pd.read_csv(units, keep_default_na=False)
    df["iou"], df["threshold"] = df["iou"].astype(object), df["threshold"].astype(object)
    df.loc[0, "iou"] = value
    df.loc[1, "threshold"] = value
    df.to_csv(units, index=False)
    for page in (None, "pages/unit_browser.py", "pages/unit_detail.py", "pages/compare.py",
                 "pages/export.py"):
        at = _app(runs, monkeypatch, "bad", page)
        assert not at.exception, (page, [e.value for e in at.exception])


def test_a_damaged_saved_direction_does_not_take_down_the_lab(runs, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    d = runs / "directions"
    _direction(d, "fine")
    (d / "broken").mkdir()
    (d / "broken" / "direction.json").write_text('{"layer": 3}')
    (d / "broken" / "direction.safetensors").write_bytes(b"junk")
    (d / "dir").mkdir()
    (d / "dir" / "direction.json").mkdir()
    monkeypatch.setenv("DISSECT_RUNS", str(runs))
    at = AppTest.from_file(str(REPO / "pages" / "ablation_lab.py"), default_timeout=240)
    at.session_state["run"] = "good"
    at.session_state["layer"] = "layer4"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("dissection" in e.value for e in at.error)


@pytest.mark.parametrize("damage", ["dir", "shape", "swapped"])
def test_a_damaged_edit_json_is_one_error_on_the_edit_page(tmp_path, monkeypatch, damage):
    from streamlit.testing.v1 import AppTest
    from dissect.editing.files import weights_digest
    edit = tmp_path / "edits" / "sea-snow-conv6-beach-1-r1"
    edit.mkdir(parents=True)
    if damage == "dir":
        (edit / "edit.json").mkdir()
    else:
        (edit / "weights.safetensors").write_bytes(b"weights")
        doc = {"figures": {"clean_acc_before": 0.9, "clean_acc_after": 0.8}, "heldout": [],
               "weights_sha256": weights_digest(edit / "weights.safetensors")}
        if damage == "shape":
            doc["figures"] = [1, 2]
        else:
            (edit / "weights.safetensors").write_bytes(b"other weights")
        (edit / "edit.json").write_text(json.dumps(doc))
    monkeypatch.setenv("DISSECT_EDITS", str(tmp_path / "edits"))
    monkeypatch.setenv("DISSECT_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(REPO / "pages" / "edit.py"), default_timeout=120)
    at.run()
    at.number_input(key="ed_n").set_value(1).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("edit 'sea-snow-conv6-beach-1-r1'" in e and "run the rewrite again" in e
               for e in errors), errors
    assert not any("dissection" in e for e in errors)


def test_the_apps_set_errors_never_list_the_servers_folders(tmp_path):
    from dissect.errors import AblationError
    from dissect.interventions.labelled import open_labelled_set
    from dissect.models.registry import load_model
    (tmp_path / "secret-project").mkdir()
    lm = load_model("toyworld", "default")
    with pytest.raises(AblationError) as e:
        open_labelled_set(f"folder:{tmp_path}", lm, list_folders=False)
    assert "secret-project" not in str(e.value) and "rename the folders" in str(e.value)
    for f in ("studio/lab.py", "pages/directions.py"):     # every set the server opens
        calls = [n for n in ast.walk(ast.parse((REPO / f).read_text()))
                 if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "open_labelled_set"]
        assert calls and all(any(k.arg == "list_folders" and k.value.value is False
                                 for k in c.keywords) for c in calls), f
