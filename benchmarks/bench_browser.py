"""Speed you can feel: click-to-images latency in a real browser on a warm studio server.

    python benchmarks/bench_browser.py [--images 2000] [--clicks 20]

Builds (once, cached under .cache/bench_browser) a resnet18 `layer4` run (random init) over a
synthetic Broden set of 224 px images, starts `streamlit run app.py` on 127.0.0.1 and drives
Debian's Chromium with playwright:
1. unit cards: click a card in the unit browser -> the unit's page with all its top images
   loaded (each unit seen for the first time).        goal: median <= 0.5 s, p95 <= 1 s
2. ablation lab: add a unit in the lab's picker -> the before/after chart of the probe image
   redrawn (and its caption naming the new unit count). goal: median <= 1 s
These are latencies a person feels, so they are printed in seconds (the only bare times in
`make bench`); run on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
IMAGES_LOADED = """k => [...document.querySelectorAll('[data-testid=stMain] img, main img')]
    .filter(i => i.complete && i.naturalWidth > 0).length >= k"""


def build_run(root: Path, n: int) -> Path:
    """runs root holding 'r18' (resnet18 layer4, n synthetic Broden images at 224 px)."""
    out = root / "runs" / "r18"
    if (out / "run.json").exists() and '"complete"' in (out / "run.json").read_text():
        return root / "runs"
    from dissect.probes.synthetic_broden import make_synthetic_broden
    probe = make_synthetic_broden(root / "probe", n=n, image_size=224, mask_size=112)["dir"]
    subprocess.run([sys.executable, "-m", "dissect", "run", "--model", "resnet18", "--weights",
                    "none", "--layer", "layer4", "--probe", f"broden:{probe}", "--quiet",
                    "--out", str(out)], cwd=REPO, check=True)
    return root / "runs"


def start_server(runs: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.headless", "true", "--server.fileWatcherType", "none"],
        cwd=REPO, env={**os.environ, "DISSECT_RUNS": str(runs)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("streamlit did not start in 120 s")


def quantiles(times: list[float]) -> str:
    q = statistics.quantiles(times, n=20, method="inclusive") if len(times) > 1 else times * 19
    return f"median {statistics.median(times):.2f} s, p95 {q[18]:.2f} s over {len(times)} clicks"


def unit_cards(page, url: str, clicks: int) -> list[float]:
    times = []
    for i in range(clicks):
        page.goto(f"{url}/unit_browser?run=r18&layer=layer4&sort=unit+%E2%86%91")
        cards = page.get_by_role("link", name=re.compile(r"unit \d+ · "))
        cards.nth(i % 24).wait_for(timeout=120_000)
        card = cards.nth(i % 24)
        unit = int(re.search(r"unit (\d+)", card.inner_text()).group(1))
        t = time.perf_counter()
        card.click()
        page.get_by_role("heading", name=re.compile(rf"^Unit {unit} · ")).wait_for(timeout=60_000)
        page.wait_for_function(IMAGES_LOADED, arg=20, timeout=60_000)
        times.append(time.perf_counter() - t)
    return times


IDLE = "() => !document.querySelector('[data-testid=stStatusWidget] button, .stStatusWidget')"
EFFECT_FOR = """n => { const e = document.querySelector('.st-key-abl_effect');
    return !!e && e.innerText.includes(': ' + n + ' unit(s)') && !!e.querySelector('.main-svg'); }"""


def ablation_lab(page, url: str, clicks: int) -> list[float] | None:
    """Add one unit at a time in the lab's picker; time from choosing it to the before/after
    chart and its caption ("layer4: N unit(s) zeroed", drawn after the chart) updated."""
    page.goto(f"{url}/ablation_lab?run=r18&layer=layer4")
    picker = page.locator(".st-key-abl_units_layer4")
    try:
        picker.wait_for(timeout=180_000)
        page.locator(".st-key-abl_predictions").wait_for(timeout=180_000)
    except Exception:        # the lab of this build has no such picker
        return None
    times = []
    for n in range(1, clicks + 1):
        u = 37 * n % 512
        page.wait_for_function(IDLE, timeout=180_000)
        field = picker.locator("input").first
        field.click()
        field.fill(f"{u} ")
        option = page.get_by_role("option", name=re.compile(rf"^{u} · "))
        option.first.wait_for(timeout=60_000)
        t = time.perf_counter()
        option.first.click()
        page.wait_for_function(EFFECT_FOR, arg=n, timeout=60_000)
        times.append(time.perf_counter() - t)
        page.keyboard.press("Escape")
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--clicks", type=int, default=20)
    args = ap.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"skipped: {CHROMIUM} is missing (make test installs it)")
        return 0
    from playwright.sync_api import sync_playwright
    runs = build_run(REPO / ".cache" / "bench_browser" / str(args.images), args.images)
    proc, url = start_server(runs)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            unit_cards(page, url, 2)                              # warm the server
            times = unit_cards(page, url, args.clicks)
            print(f"unit card click -> top images loaded: {quantiles(times)} "
                  f"(goal: median <= 0.5 s, p95 <= 1 s)")
            ablation_lab(page, url, 1)                            # warm the lab's model
            lab = ablation_lab(page, url, min(args.clicks, 10))
            if lab is None:
                print("ablation lab before/after: not measured (no abl_units_layer4 picker)")
            else:
                print(f"ablation lab units change -> before/after redrawn: {quantiles(lab)} "
                      f"(goal: median <= 1 s)")
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
