"""Retake the README's screenshots: python docs/screenshots.py [--runs runs]

Starts the studio the way `make run` does (dissect_studio/__main__.py: imports warmed, every
request through app.py) over a runs folder holding `toyworld-default` (`python -m dissect
default-run`), opens the tour's pages in Debian's headless chromium through playwright (as
tests/test_browser.py does) and writes docs/img/*.png. The first request is the cold shared link
of the unit page; the script prints how long the frame, the spinner and the page took.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMG = REPO / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--unit", type=int, default=3, help="the conv6 sun unit to show")
    ap.add_argument("--plain", action="store_true",
                    help="time the cold link under plain `streamlit run app.py`; no screenshots")
    args = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / "dissect-screenshots-server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, *(["-m", "streamlit"] if args.plain else ["dissect_studio/__main__.py"]),
         "run", "app.py", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env={**os.environ, "DISSECT_RUNS": str(Path(args.runs).resolve()),
                       "OMP_NUM_THREADS": "1"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, log_path.read_text()[-2000:]
                time.sleep(0.3)
        q = "run=toyworld-default&layer=conv6"
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = b.new_page(viewport={"width": 1440, "height": 1000})
            t0 = time.monotonic()
            page.goto(f"{url}/unit_detail?{q}&unit={args.unit}", wait_until="commit")
            page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
            t_frame = time.monotonic() - t0
            spinner = page.get_by_text("Starting the studio")
            saw_spinner = None
            heading = page.get_by_role("heading", name=re.compile(rf"^Unit {args.unit} · "))
            while not heading.is_visible():
                if saw_spinner is None and spinner.is_visible():
                    saw_spinner = time.monotonic() - t0
                assert time.monotonic() - t0 < 180, "the unit page did not render in 180 s"
                page.wait_for_timeout(50)
            t_page = time.monotonic() - t0
            print(f"{'plain streamlit run' if args.plain else 'dissect_studio'}: cold shared link: frame {t_frame:.1f} s, spinner "
                  f"{'%.1f s' % saw_spinner if saw_spinner is not None else 'not seen'}, "
                  f"unit page {t_page:.1f} s")
            if args.plain:
                b.close()
                return 0
            page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stMain] img')]"
                                   ".filter(i => i.complete && i.naturalWidth > 0).length >= 10",
                                   timeout=120_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(IMG / "unit-page.png"))
            page.goto(f"{url}/unit_browser?{q}")
            expect(page.get_by_role("heading", name="Units of conv6")).to_be_visible(
                timeout=120_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(IMG / "unit-browser.png"))
            page.goto(f"{url}/ablation_lab?{q}&units=3,17,50")
            page.wait_for_timeout(20_000)
            page.screenshot(path=str(IMG / "ablation-lab.png"), full_page=True)
            b.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
