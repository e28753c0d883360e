"""A real Streamlit server on 127.0.0.1 driven by Debian's Chromium through playwright.

Opens the unit browser, clicks a unit card, and checks that the unit's label and its top images
appear; then opens a unit's shareable URL directly. Screenshots go to tests/artifacts/.
Needs /usr/bin/chromium (`make test` installs it); nothing is downloaded here.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


SERVERS: dict[str, subprocess.Popen] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(root: Path, env: dict | None = None):
    """URL of a fresh streamlit server on 127.0.0.1 over the runs root `root`; stopped after.
    SERVERS[url] is its process while it runs."""
    port = _free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.headless", "true", "--server.fileWatcherType", "none"],
        cwd=REPO, env={**os.environ, "DISSECT_RUNS": str(root), "OMP_NUM_THREADS": "1",
                       **(env or {})},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "streamlit did not start in 90 s"
            time.sleep(0.5)
        SERVERS[url] = proc
        yield url
    finally:
        SERVERS.pop(url, None)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except ProcessLookupError:
            pass                                  # stopped already (a test sent SIGTERM)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def runs_root(engine_run, second_run, tmp_path_factory) -> Path:
    """A runs root holding copies of engine_run ('r18') and second_run ('r18s1')."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    root = tmp_path_factory.mktemp("browser_runs")
    for run in (engine_run, second_run):
        shutil.copytree(run, root / run.name, ignore=shutil.ignore_patterns("cache"))
    return root


@pytest.fixture(scope="module")
def server(runs_root):
    """URL of a streamlit server over runs_root, shared by the tests of this module."""
    with streamlit_server(runs_root) as url:
        yield url


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _loaded_images(page) -> int:
    """<img> elements in the main area that finished loading real pixels."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=stMain] img, main img')]
        .filter(i => i.complete && i.naturalWidth > 0).length""")


def test_unit_browser_click_opens_unit_with_label_and_images(server, engine_run):
    from playwright.sync_api import expect, sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    units = pd.read_csv(engine_run / "layers" / "layer4" / "units.csv")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"{server}/unit_browser?run=r18&layer=layer4")
            expect(page.get_by_role("heading", name="Units of layer4")).to_be_visible(
                timeout=120_000)
            card = page.get_by_role("link", name=re.compile(r"unit \d+ · ")).first
            expect(card).to_be_visible(timeout=60_000)
            page.wait_for_function("() => document.querySelectorAll('[data-testid=stMain] img, main img')"
                                   ".length >= 4", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "unit_browser.png"), full_page=True)
            name = card.inner_text()
            unit = int(re.search(r"unit (\d+)", name).group(1))
            label = units.loc[units.unit == unit, "label"].iloc[0]
            card.click()

            heading = page.get_by_role("heading", name=re.compile(rf"^Unit {unit} · "))
            expect(heading).to_be_visible(timeout=60_000)
            expect(heading).to_contain_text(str(label))
            k = 20
            page.wait_for_function(
                f"() => [...document.querySelectorAll('[data-testid=stMain] img, main img')]"
                f".filter(i => i.complete && i.naturalWidth > 0).length >= {k}", timeout=60_000)
            assert _loaded_images(page) >= k
            assert f"unit={unit}" in page.url and "run=r18" in page.url
            page.screenshot(path=str(ARTIFACTS / "unit_detail.png"), full_page=True)

            # the shareable URL opens the same unit in a fresh tab
            other = browser.new_page(viewport={"width": 1440, "height": 1000})
            other.goto(page.url)
            expect(other.get_by_role("heading", name=re.compile(rf"^Unit {unit} · "))
                   ).to_be_visible(timeout=60_000)
            other.goto(f"{server}/?run=r18&layer=layer3")      # the overview is the root page
            expect(other.get_by_role("heading", name="r18 · layer3")).to_be_visible(
                timeout=60_000)
            other.wait_for_function("() => document.querySelectorAll('.main-svg').length >= 2",
                                    timeout=60_000)
            other.wait_for_timeout(1000)
            other.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
        finally:
            browser.close()


def test_cold_deep_link_shows_only_our_menu(runs_root, browser, tmp_path):
    """The first request to a fresh server is a deep link: it renders that page through our
    menu, and no other menu entry (Streamlit's pages/-folder list) ever appears meanwhile."""
    from playwright.sync_api import expect
    from studio.nav import available
    titles = {title for _, title, _, _ in available().values()}
    root = tmp_path / "cold"
    shutil.copytree(runs_root, root, ignore=shutil.ignore_patterns("server.log"))
    with streamlit_server(root) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{url}/unit_detail?run=r18&layer=layer4&unit=3", wait_until="commit")
        heading = page.get_by_role("heading", name=re.compile(r"^Unit 3 · "))
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while not heading.is_visible():
            seen.update(page.evaluate("""() => [...document.querySelectorAll(
                '[data-testid=stSidebarNav] a, [data-testid=stSidebarNavItems] a, '
                + '[data-testid=stSidebar] [data-testid=stPageLink] a')]
                .map(a => a.innerText.trim().split('\\n').pop())"""))
            assert time.monotonic() < deadline, "the deep link did not render in 120 s"
            page.wait_for_timeout(100)
        menu = page.locator("[data-testid=stSidebar] a", has_text="Unit detail")
        expect(menu).to_be_visible(timeout=60_000)
        links = page.evaluate("""() => [...document.querySelectorAll('[data-testid=stSidebar] a')]
            .map(a => a.innerText.trim().split('\\n').pop()).filter(t => t)""")
        assert page.locator("[data-testid=stSidebarNav]").count() == 0
        assert set(links) <= titles and "Unit detail" in links, links
        assert seen <= titles, f"foreign menu entries appeared: {sorted(seen - titles)}"
        assert "unit=3" in page.url and "run=r18" in page.url
        page.screenshot(path=str(ARTIFACTS / "cold_deep_link.png"), full_page=True)


def test_compare_page_with_two_runs(server, browser):
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.goto(f"{server}/compare?run=r18&sel=r18:layer4,r18s1:layer4")
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('.main-svg').length >= 3",
                           timeout=60_000)
    expect(page.get_by_text("Label changes, unit by unit")).to_be_visible()
    expect(page.get_by_test_id("stMetric").first).to_be_visible()
    assert "sel=r18" in page.url
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_ablation_lab_first_view_shows_predictions(server, browser):
    """The lab opens on a probe image with its top-5 predictions, without any click."""
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.set_default_timeout(180_000)
    page.goto(f"{server}/ablation_lab?run=r18&layer=layer4")
    expect(page.get_by_role("heading", name="Ablation lab")).to_be_visible(timeout=180_000)
    preds = page.locator(".st-key-abl_predictions")
    expect(preds).to_be_visible(timeout=180_000)
    expect(preds).to_contain_text("Top 5")
    items = preds.locator("li")
    expect(items).to_have_count(5)
    assert all(re.search(r"\d(\.\d+)?(%|e-\d+)$", t.strip()) for t in items.all_inner_texts())
    expect(page.locator(".st-key-abl_effect [data-testid=stImage] img").first).to_be_visible()
    expect(page.locator(".st-key-abl_effect .main-svg").first).to_be_visible()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stMain] img')"
                           ".length >= 8", timeout=120_000)      # the image and thumbnails
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "ablation_lab.png"), full_page=True, timeout=120_000)


def test_lab_set_runs_in_the_background_cancel_and_sigterm(runs_root, browser, tmp_path):
    """A big labelled set is built in the background: the page stays live and shows progress,
    Cancel stops it, and SIGTERM stops the server in seconds even while such a job runs."""
    from playwright.sync_api import expect
    root = tmp_path / "bg"
    shutil.copytree(runs_root, root, ignore=shutil.ignore_patterns("server.log"))
    with streamlit_server(root, env={"DISSECT_CACHE": str(tmp_path / "cache")}) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        page.set_default_timeout(120_000)
        page.goto(f"{url}/ablation_lab?run=r18&layer=layer4")
        expect(page.locator(".st-key-abl_predictions")).to_contain_text("Top 5", timeout=180_000)
        field = page.locator(".st-key-abl_set input")
        limit = page.locator(".st-key-abl_limit input")
        limit.fill("5000")
        limit.press("Enter")
        field.fill("toyworld:5000")
        field.press("Enter")
        bar = page.get_by_text(re.compile(r"Labelled set toyworld:5000 .* building toyworld"))
        expect(bar).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "lab_background_job.png"), full_page=True)
        # the page is live meanwhile: a unit change redraws the predictions
        page.get_by_role("button", name="Invert").click()
        expect(page.get_by_text(re.compile(r"512 of 512 units selected"))).to_be_visible(
            timeout=30_000)
        t = time.monotonic()
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_text(re.compile(r"toyworld:5000.*cancelled"))).to_be_visible(
            timeout=20_000)
        assert time.monotonic() - t < 20
        assert not list((tmp_path / "cache").glob("toyworld/*5000*")), "a half world was left"
        # ask again, and stop the server while the job runs
        page.get_by_role("button", name="Try again").click()
        expect(bar).to_be_visible(timeout=60_000)
        proc = SERVERS[url]
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        assert time.monotonic() - t < 15, "SIGTERM did not stop the server"
