"""The first hour's papercuts (issue 26), each checked for real:

- `ablate --layer conv6 --control ...` with no --units works (the layer comes from --layer);
- a failed `run` leaves no empty folder behind;
- a Ray join to a port where something else answers fails in <= 5 s, in one line;
- the missing-Broden error names `python -m dissect data broden`;
- `rewrite --layer conv6.2` (the ReLU inside block conv6) suggests conv6;
- the app's heavy imports start in a background thread;
- the default run includes the trust columns and conv6's formulas (tests/test_docs.py runs the tour, slow).
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "DISSECT_CACHE": str(REPO / ".cache")}
    return subprocess.run([sys.executable, "-m", "dissect", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_control_uses_the_layer_given(tmp_path):
    p = cli("ablate", "--model", "toyworld", "--layer", "conv6", "--set", "toyworld:40",
            "--seed", "7", "--control", "1,2", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert [r["n"] for r in out["control"]] == [1, 2]
    assert out["intervention"]["units"] == []             # accuracy only, plus the curve
    bad = cli("ablate", "--model", "toyworld", "--layer", "conv9", "--set", "toyworld:40",
              "--control", "1", cwd=tmp_path)
    assert bad.returncode == 2 and "conv9" in bad.stderr and "Traceback" not in bad.stderr


def test_failed_run_leaves_no_empty_folder(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for args in (["--model", "no_such_model"], ["--model", "toyworld", "--weights",
                                               str(tmp_path / "missing.safetensors")]):
        p = cli("run", *args, "--layer", "conv6", "--probe", "toyworld:30", "--out",
                str(runs / "r"), "--quiet", cwd=tmp_path)
        assert p.returncode == 2, p.stderr[-2000:]
        assert list(runs.iterdir()) == [], "a failed run left a folder behind"


def test_lock_keeps_a_folder_that_holds_work(tmp_path):
    from dissect.runs.lock import run_lock
    with run_lock(tmp_path / "a"):
        pass
    assert not (tmp_path / "a").exists()                  # made here, nothing written: gone
    with run_lock(tmp_path / "b"):
        (tmp_path / "b" / "cache").mkdir()
        (tmp_path / "b" / "cache" / "acts.bin").write_bytes(b"x")
    assert (tmp_path / "b" / "cache" / "acts.bin").exists()   # durable work: kept (resume)
    (tmp_path / "c").mkdir()
    with run_lock(tmp_path / "c"):
        pass
    assert (tmp_path / "c").is_dir()                      # not ours to remove


def test_ray_join_to_a_non_ray_port_fails_fast():
    from dissect.engine.cluster import check_address
    from dissect.errors import RunError

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass
    web = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        for port in (web.server_port, silent.getsockname()[1]):
            t = time.monotonic()
            with pytest.raises(RunError, match="not a Ray cluster"):
                check_address(f"127.0.0.1:{port}")
            assert time.monotonic() - t <= 5.0
    finally:
        web.shutdown()
        silent.close()


def test_ray_join_accepts_a_grpc_answer():
    """A server that answers the HTTP/2 preface with a SETTINGS frame (as Ray's GCS does) passes."""
    from dissect.engine.cluster import check_address
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def answer():
        conn, _ = srv.accept()
        conn.recv(64)
        conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")    # empty SETTINGS frame
        conn.close()
    threading.Thread(target=answer, daemon=True).start()
    check_address(f"127.0.0.1:{srv.getsockname()[1]}")
    srv.close()


def test_missing_broden_names_the_download_command(tmp_path):
    p = cli("run", "--model", "toyworld", "--layer", "conv6", "--probe",
            f"broden:{tmp_path}/data/broden1_224", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert p.returncode == 2
    assert "python -m dissect data broden --out" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()


def test_rewrite_suggests_the_enclosing_block():
    from dissect.editing.rewrite import edit_target
    from dissect.errors import RewriteError
    import dissect
    lm = dissect.load_model("toyworld")
    with pytest.raises(RewriteError, match="enclosing block conv6"):
        edit_target(lm.model, "conv6.2")
    assert edit_target(lm.model, "conv6").name == "conv6.0"


def test_studio_imports_start_in_the_background():
    code = ("import sys; sys.path.insert(0, 'dissect_studio'); from studio import warm; "
            "assert warm.ready(); t = warm.start(('json',), ('colorsys',)); "
            "assert warm.start() is t; assert warm.wait(30); t.join(30); "
            "assert 'colorsys' in sys.modules; print('ok')")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-2000:]


def test_studio_command_warms_and_routes_through_the_app(tmp_path):
    p = cli("studio", "--dry-run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "dissect_studio/__main__.py run" in p.stdout and str(REPO / "app.py") in p.stdout


@pytest.mark.slow
@pytest.mark.browser
def test_cold_shared_link_through_the_warm_start(tmp_path):
    """`make run`'s server (dissect_studio/__main__.py): the first request, a unit page's shared
    link, renders that unit through app.py with our menu, and no Streamlit pages/ list."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is missing: `make test` installs Debian's chromium")
    import re
    import signal
    import urllib.request

    from playwright.sync_api import expect, sync_playwright
    runs = tmp_path / "runs"
    p = cli("run", "--model", "toyworld", "--layer", "conv6", "--probe", "toyworld:60",
            "--out", str(runs / "toy"), "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "dissect_studio/__main__.py", "run", "app.py", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env={**os.environ, "DISSECT_RUNS": str(runs), "OMP_NUM_THREADS": "1"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.3)
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                   args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/unit_detail?run=toy&layer=conv6&unit=5", wait_until="commit")
            expect(page.get_by_role("heading", name=re.compile(r"^Unit 5 · "))).to_be_visible(
                timeout=120_000)
            expect(page.locator("[data-testid=stSidebar] a", has_text="Unit detail")
                   ).to_be_visible(timeout=60_000)
            assert page.locator("[data-testid=stSidebarNav]").count() == 0
            assert "unit=5" in page.url
            b.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()


def test_output_folders_are_ignored_and_sources_are_not():
    """runs/, dirs/ and edits/ (the docs' --out folders) stay out of git; dissect/runs/ (the
    package, once hidden by a bare `runs/` pattern) does not."""
    import shutil
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = ["runs/toyworld-default/run.json", "dirs/sun/direction.json",
               "edits/sea-snow/edit.json"]
    kept = ["dissect/runs/atomic.py", "dissect/runs/writer.py", "dissect/runs/__init__.py"]
    p = subprocess.run(["git", "check-ignore", "--no-index", *ignored, *kept], cwd=REPO,
                       capture_output=True, text=True)
    assert set(p.stdout.split()) == set(ignored), p.stdout


def test_explain_summary_line_with_and_without_the_null():
    import pandas as pd

    from dissect.commands.explain import summary_line
    base = pd.DataFrame({"unit": [0, 1, 2], "formula": ["sun", "(sea AND NOT sky)", "car"],
                         "formula_fallback": [True, False, True]})
    line = summary_line("conv6", base)
    assert line.startswith("conv6 formulas: 1 beat their single label on held-out images, 2 keep it")
    assert "dissect with --null" in line
    trust = base.assign(p_value=[0.001, 0.5, 0.001], significant=[True, False, True],
                        p_localised=[0.001, 0.9, 0.7], p_method="permutation")
    line = summary_line("conv6", trust)
    assert line.endswith("conv6: 2 significant (1 localised detectors, 1 co-occur only), "
                         "1 not distinguishable from chance")
