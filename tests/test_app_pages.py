"""The studio's pages through streamlit.testing (AppTest): widgets, navigation, query-parameter
links, bad input. Every page reads a run folder made by the real engine (conftest.engine_run)."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio import common, jobs  # noqa: E402


@pytest.fixture(scope="module")
def root(engine_run, tmp_path_factory) -> Path:
    """A runs root: r18 (complete) plus a failed, an old-format, a running and an
    images-missing run."""
    root = tmp_path_factory.mktemp("runs_root")
    good = root / "r18"
    shutil.copytree(engine_run, good, ignore=shutil.ignore_patterns("cache"))
    info = json.loads((good / "run.json").read_text())
    for name, change in [("failed", {"status": "failed", "error": "CUDA out of memory at batch 3"}),
                         ("oldver", {"format_version": 0}),
                         ("going", {"status": "running",
                                    "progress": {"phase": "forward", "done": 7, "total": 40}})]:
        (root / name).mkdir()
        (root / name / "run.json").write_text(json.dumps({**info, **change}))
    holey = root / "holey"
    shutil.copytree(good, holey)
    (holey / "layers" / "layer4" / "topk.npz").unlink()
    (holey / "run.json").write_text(json.dumps({**info, "updated": "2000-01-02T00:00:00+00:00"}))
    torn = root / "torn"
    shutil.copytree(good, torn)
    (torn / "layers" / "layer4" / "units.csv").write_bytes(b"\xff\xfe\x00\x81garbage\n\x00")
    (torn / "run.json").write_text(json.dumps({**info, "updated": "2000-01-03T00:00:00+00:00"}))
    noimg = root / "noimg"
    shutil.copytree(good, noimg)
    imgs = pd.read_csv(noimg / "images.csv")
    imgs["path"] = [f"/nonexistent/img{i}.jpg" for i in range(len(imgs))]
    imgs.to_csv(noimg / "images.csv", index=False)
    (noimg / "run.json").write_text(json.dumps({**info, "config": {**info["config"],
                                                "probe": "broden:/nonexistent/broden"},
                                                "updated": "2000-01-01T00:00:00+00:00"}))
    return root


@pytest.fixture(autouse=True)
def runs_env(root, monkeypatch):
    monkeypatch.setenv("DISSECT_RUNS", str(root))


def app(page: str | None = None, **params) -> AppTest:
    """Run app.py (optionally then `page`) with query parameters."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "markdown", "caption", "info", "warning", "error")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_overview_summary_charts_and_layer_picker():
    at = app(run="r18")
    assert at.title[0].value == "r18 · layer4"
    assert "of 512 units interpretable, covering" in texts(at)
    assert len(at.get("plotly_chart")) >= 2
    assert at.query_params == {"run": "r18", "layer": "layer4"}
    at.sidebar.radio(key="_pick_layer").set_value("layer3").run()
    assert at.title[0].value == "r18 · layer3"
    assert "of 256 units interpretable" in texts(at)
    assert at.query_params["layer"] == "layer3"


def test_unit_browser_filters_and_card_opens_unit():
    at = app("pages/unit_browser.py", run="r18", layer="layer4")
    assert at.title[0].value == "Units of layer4"
    assert len(unit_cards(at)) == 24
    at.text_input(key="browser_search").set_value("zzz-no-such-concept").run()
    assert "No unit matches" in texts(at)
    at.text_input(key="browser_search").set_value("").run()
    at.selectbox(key="browser_sort").set_value("unit ↑").run()
    cards = unit_cards(at)                    # links: the unit page opens in one run
    assert list(cards)[:6] == [0, 1, 2, 3, 4, 5]
    assert cards[5].page == "unit_detail"
    assert cards[5].query_string == "run=r18&layer=layer4&unit=5"
    for k, v in (kv.split("=") for kv in cards[5].query_string.split("&")):
        at.query_params[k] = v
    at.switch_page("pages/unit_detail.py").run()
    assert not at.exception
    assert at.title[0].value.startswith("Unit 5 ·")


def unit_cards(at) -> dict:
    """{unit: page_link proto} of the unit browser's cards."""
    import re
    return {int(re.match(r"unit (\d+) · ", pl.proto.label).group(1)): pl.proto
            for pl in at.get("page_link") if re.match(r"unit \d+ · ", pl.proto.label)}


def test_unit_detail_from_link_prev_next_and_bad_unit():
    at = app("pages/unit_detail.py", run="r18", layer="layer3", unit=7)
    assert at.title[0].value.startswith("Unit 7 ·")
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1
    assert len(at.get("plotly_chart")) == 2            # IoU top-20 and histogram
    at.button(key="next_unit").click().run()
    assert at.title[0].value.startswith("Unit 8 ·") and at.query_params["unit"] == "8"
    at.button(key="prev_unit").click().run()
    at.button(key="prev_unit").click().run()
    assert at.title[0].value.startswith("Unit 6 ·")
    at.toggle(key="show_seg").set_value(True).run()
    assert not at.exception
    bad = app("pages/unit_detail.py", run="r18", layer="layer3", unit=99999)
    assert "does not exist" in texts(bad)


def test_image_viewer_shows_segmentation_and_firing_units():
    at = app("pages/image_viewer.py", run="r18", layer="layer4", image=3)
    assert at.title[0].value == "Image 3"
    assert "Units that fire on this image" in " ".join(s.value for s in at.subheader)
    assert at.query_params["image"] == "3"
    at.button(key="next_img").click().run()
    assert at.title[0].value == "Image 4"
    at.slider(key="seg_units").set_value(3).run()
    assert not at.exception


def test_export_offers_four_formats():
    at = app("pages/export.py", run="r18")
    assert at.title[0].value == "Export"
    assert len(at.get("download_button")) >= 4
    at.radio(key="export_scope").set_value(at.radio(key="export_scope").options[1]).run()
    assert not at.exception and len(at.get("download_button")) >= 5   # one tally per layer


def test_new_run_page_validates_before_starting(root):
    at = app("pages/new_run.py")
    assert at.title[0].value == "New run"
    assert at.button(key="nr_start").disabled is False or "To start" in texts(at)
    at.radio(key="nr_kind").set_value("broden").run()
    assert at.button(key="nr_start").disabled
    assert "give the broden folder" in texts(at)
    at.text_input(key="nr_name").set_value("../escape").run()
    assert "plain run name" in texts(at)
    at.text_input(key="nr_name").set_value("r18").run()
    assert at.button(key="nr_start").disabled


def test_query_params_cannot_leave_the_runs_root(root):
    at = app(run="../../etc", layer="layer4")
    assert "not a run folder name" in texts(at)
    assert at.query_params["run"] != "../../etc"
    assert common.safe_run_path("../x", root) is None
    assert common.safe_run_path("a/b", root) is None
    assert common.safe_run_path("..", root) is None
    assert common.safe_run_path("r18", root) == (root / "r18").resolve()


def test_bad_runs_get_helpful_pages():
    failed = app(run="failed")
    assert "is failed" in failed.title[0].value
    assert "CUDA out of memory at batch 3" in texts(failed)
    old = app(run="oldver")
    assert "cannot be read" in old.title[0].value and "format_version" in texts(old)
    holey = app("pages/unit_detail.py", run="holey", layer="layer4")
    assert "missing files" in holey.title[0].value and "topk.npz" in texts(holey)
    torn = app(run="torn", layer="layer4")          # need_run reads the layer (dissect.runs.safe)
    assert "cannot be read" in torn.title[0].value and "invalid start byte" in texts(torn)
    going = app("pages/unit_detail.py", run="going")
    assert "is running" in going.title[0].value
    assert going.get("progress")


def test_missing_images_do_not_break_pages():
    at = app("pages/unit_detail.py", run="noimg", layer="layer4", unit=1)
    assert at.title[0].value.startswith("Unit 1")
    viewer = app("pages/image_viewer.py", run="noimg", layer="layer4", image=0)
    assert "missing" in texts(viewer)


def test_no_runs_yet(tmp_path, monkeypatch):
    monkeypatch.setenv("DISSECT_RUNS", str(tmp_path / "empty"))
    at = app()
    assert at.title[0].value == "No runs yet"
    assert "make run" in texts(at) and "python -m dissect run" in texts(at)


def test_ablate_handoff_sets_session_state():
    at = app("pages/unit_browser.py", run="r18", layer="layer4")
    at.button(key="ablate_btn").click().run()
    assert not at.exception
    if (REPO / "pages" / "ablation_lab.py").exists():   # the lab took the hand-off
        assert "ablate_units" not in at.session_state
        assert len(at.session_state["abl_units_layer4"]) == 512
    else:
        assert len(at.session_state["ablate_units"]["units"]) == 512


def test_job_lock_prevents_double_start_and_cancel_kills(tmp_path):
    run_dir = tmp_path / "job"
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    pid = jobs.start(run_dir, cmd)
    try:
        assert jobs.running_pid(run_dir) == pid
        with pytest.raises(jobs.AlreadyRunning):
            jobs.start(run_dir, cmd)
        assert jobs.cancel(run_dir)
        t = time.monotonic()
        while jobs.running_pid(run_dir) is not None and time.monotonic() - t < 5:
            time.sleep(0.1)
        assert jobs.running_pid(run_dir) is None
        pid2 = jobs.start(run_dir, [sys.executable, "-c", "pass"])   # stale lock: replaced
        assert pid2 != pid
    finally:
        jobs.cancel(run_dir)
    cmd = jobs.run_command(model="resnet18", weights="none", layers=["layer3", "layer4"],
                           probe="toyworld:50", out=tmp_path / "o", quantile=0.01)
    assert cmd[1:4] == ["-m", "dissect", "run"] and "layer3,layer4" in cmd


def test_unit_detail_next_unit_renders_new_overlays():
    """Stepping to units not seen before renders their own images (speed: benchmarks/
    bench_browser.py, not a timed test)."""
    at = app("pages/unit_detail.py", run="r18", layer="layer4", unit=3)
    for want in (4, 5, 6):
        at.button(key="next_unit").click().run()
        assert not at.exception
        assert at.title[0].value.startswith(f"Unit {want} · ")
        assert at.query_params["unit"] in (str(want), [str(want)])


@pytest.mark.slow
def test_new_run_page_starts_a_real_dissection(root, engine_run):
    probe = json.loads((engine_run / "run.json").read_text())["config"]["probe"]
    at = app("pages/new_run.py")
    at.selectbox(key="nr_model").set_value("resnet18").run()
    assert at.text_input(key="nr_weights_resnet18").value == "default"   # trained by default
    at.text_input(key="nr_weights_resnet18").set_value("none").run()     # not on this machine
    at.text_input(key="nr_layers_text_resnet18").set_value("layer4").run()
    at.radio(key="nr_kind").set_value("broden").run()
    at.text_input(key="nr_dir_broden").set_value(probe.split(":", 1)[1]).run()
    at.number_input(key="nr_bs").set_value(20).run()
    at.text_input(key="nr_name").set_value("fromapp").run()
    assert not at.button(key="nr_start").disabled, texts(at)
    at.button(key="nr_start").click().run()
    assert "Started 'fromapp'" in " ".join(s.value for s in at.success)
    run_dir = root / "fromapp"
    lock = jobs.read_lock(run_dir)
    assert lock and isinstance(lock["pid"], int)
    with pytest.raises(jobs.AlreadyRunning):      # another session pressing Start
        if jobs.running_pid(run_dir) is None:
            raise jobs.AlreadyRunning("finished already")
        jobs.start(run_dir, lock["cmd"])
    deadline = time.monotonic() + 240
    while jobs.running_pid(run_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete", jobs.log_tail(run_dir)
    at.run()
    assert "complete" in texts(at) or at.success
    picker = app(run="fromapp")
    assert picker.title[0].value == "fromapp · layer4"


def test_new_run_lists_the_models_layers():
    at = app("pages/new_run.py")
    at.selectbox(key="nr_model").set_value("resnet18").run()
    at.text_input(key="nr_weights_resnet18").set_value("none").run()
    at.toggle(key="nr_list").set_value(True).run(timeout=200)
    assert not at.exception and not at.error
    layers = at.multiselect(key="nr_layers")
    assert layers.value == ["layer3", "layer4"]
    assert any(o.startswith("layer4.1.conv2") for o in layers.options)


def test_image_viewer_gallery_picks_an_image():
    at = app("pages/image_viewer.py", run="r18", layer="layer4", image=0)
    at.button(key="pick_7").click().run()
    assert at.title[0].value == "Image 7" and at.query_params["image"] == "7"


HOSTILE_PARAMS = [
    {"image": "-1"}, {"image": "abc"}, {"image": "1e400"}, {"image": "99999999999999999999999"},
    {"unit": "-5"}, {"unit": "nan"}, {"unit": "9" * 30}, {"layer": "../../etc"},
    {"layer": "layer4\x00"}, {"run": "r18/../../x"}, {"units": "1-999999999"},
    {"units": "3,,x,-2"}, {"sel": "r18:layer4,nope:../x,:"}, {"fm": "((( AND"},
    {"sort": "bogus"}, {"q": "<script>alert(1)</script>" * 50}, {"iou": "2,-1"},
    {"cat": "x" * 5000},
]


@pytest.mark.parametrize("page", ["overview", "browser", "unit", "image", "compare", "ablation",
                                  "directions", "edit", "export"])
def test_hostile_link_parameters_never_break_a_page(page):
    """Every page takes every odd parameter of a shared link: at most a warning, never a
    traceback, and the link never points outside the runs root afterwards."""
    from studio.nav import PAGES
    for bad in HOSTILE_PARAMS:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        for k, v in {"run": "r18", "layer": "layer4", **bad}.items():
            at.query_params[k] = v
        at.run()
        at.switch_page(PAGES[page][0])
        at.run()
        assert not at.exception, (page, bad, [e.value for e in at.exception])
        assert ".." not in str(at.query_params.get("run", "")), (page, bad)
        if page == "ablation" and "units" in bad:
            assert any("Ignoring the link's units" in w.value for w in at.warning), bad
