"""Damaged and hostile input in the app (AppTest): the message is on the page, never a
traceback; a run folder never makes the server import code (issue 10)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB = str(REPO / "pages" / "ablation_lab.py")


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory, tiny_labelled_run):
    root = tmp_path_factory.mktemp("hostileapp")
    tiny_labelled_run("layer4", root / "runs" / "r18", seed=2, labels={4: ("tree", 0.3)})
    return root


def _lab(root, monkeypatch, run="r18", **params):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("DISSECT_RUNS", str(root / "runs"))
    at = AppTest.from_file(LAB, default_timeout=240)
    at.session_state["run"] = run
    at.session_state["layer"] = "layer4"
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_run_naming_a_model_file_asks_before_importing(lab_root, tmp_path, monkeypatch):
    marker = tmp_path / "IMPORTED"
    evil = tmp_path / "net.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                    "import torchvision\n"
                    "def build():\n    return torchvision.models.resnet18()\n")
    sent = lab_root / "runs" / "sent"
    shutil.copytree(lab_root / "runs" / "r18", sent)
    info = json.loads((sent / "run.json").read_text())
    info["config"]["model"] = f"{evil}:build"
    (sent / "run.json").write_text(json.dumps(info))
    try:
        at = _lab(lab_root, monkeypatch, run="sent")
        assert not at.exception
        assert any(str(evil) in w.value and "runs it inside this server" in w.value
                   for w in at.warning)
        assert not marker.exists()                      # opening the lab imported nothing
        at.button(key="abl_trust_file").click().run()
        assert not at.exception
        assert marker.exists()                          # only after the user confirmed
    finally:
        shutil.rmtree(sent)


def test_shared_link_keeps_units(lab_root, monkeypatch):
    at = _lab(lab_root, monkeypatch, units="3,4,5,9")
    assert not at.exception
    assert list(at.session_state["abl_units_layer4"]) == [3, 4, 5, 9]
    assert at.query_params["units"] in ("3-5,9", ["3-5,9"])
    at.button(key="abl_reset").click().run()
    assert list(at.session_state["abl_units_layer4"]) == []
    assert "units" not in at.query_params


def test_huge_toyworld_set_is_refused_in_the_lab(lab_root, monkeypatch, settle):
    at = _lab(lab_root, monkeypatch)
    at.text_input(key="abl_set").set_value("toyworld:100000").run()
    assert not at.exception
    settle(at)
    assert any("over the limit of 5,000" in e.value for e in at.error), [e.value for e in at.error]


def test_new_run_that_dies_at_once_shows_its_error(tmp_path, monkeypatch):
    import sys
    import time

    from streamlit.testing.v1 import AppTest

    from studio import jobs
    root = tmp_path / "runs"
    root.mkdir()
    cmd = [sys.executable, "-m", "dissect", "run", "--model", "resnet18", "--weights", "none", "--layer", "layer3",
           "--probe", "toyworld:4", "--batch-size", "0", "--quiet", "--out", str(root / "bad")]
    jobs.start(root / "bad", cmd, cwd=REPO)
    deadline = time.monotonic() + 180
    while jobs.running_pid(root / "bad") is not None and time.monotonic() < deadline:
        time.sleep(0.3)
    monkeypatch.setenv("DISSECT_RUNS", str(root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["nr_watched"] = ["bad"]
    at.run()
    at.switch_page("pages/new_run.py")
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("--batch-size 0 must be at least 1" in e for e in errors), errors
    assert not any(str(root) in e for e in errors)


@pytest.mark.parametrize("damage", [[1, 2, 3], {"counts": None}, {"layers": "conv6"}])
def test_one_damaged_run_json_breaks_no_page(lab_root, tmp_path, monkeypatch, damage):
    from streamlit.testing.v1 import AppTest
    root = tmp_path / "runs"
    shutil.copytree(lab_root / "runs" / "r18", root / "good")
    shutil.copytree(lab_root / "runs" / "r18", root / "bad")
    info = json.loads((root / "bad" / "run.json").read_text())
    if isinstance(damage, list):
        info = damage
    elif "layers" in damage:
        info["config"]["layers"] = damage["layers"]
    else:
        info.update(damage)
    (root / "bad" / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("DISSECT_RUNS", str(root))
    for run, page in (("good", None), ("good", "pages/unit_browser.py"), ("bad", None),
                      ("bad", "pages/unit_browser.py")):
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        at.query_params["run"] = run
        at.run()
        if page:
            at.switch_page(page)
            at.run()
        assert not at.exception, [e.value for e in at.exception]
        if run == "bad":
            assert "cannot be read" in at.title[0].value
            assert any("is damaged" in e.value and str(root) not in e.value for e in at.error)
        else:
            assert "cannot be read" not in at.title[0].value
