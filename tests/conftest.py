"""Shared fixtures.

`engine_run`: a complete run folder made by the real engine (`python -m dissect run`, resnet18
with random weights, layers layer3 and layer4, 40 synthetic Broden images of 96 px); made once
per test session in a few seconds. Its parent folder is a runs root holding only this run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def engine_run(tmp_path_factory) -> Path:
    """Path of a complete run folder: <tmp>/runs/r18 (probe images under <tmp>/probe)."""
    from dissect.probes.synthetic_broden import make_synthetic_broden
    base = tmp_path_factory.mktemp("engine")
    probe = make_synthetic_broden(base / "probe", n=40, image_size=96, mask_size=48)["dir"]
    out = base / "runs" / "r18"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "dissect", "run", "--model", "resnet18", "--weights", "none",
         "--layer", "layer3,layer4", "--probe", f"broden:{probe}", "--batch-size", "20",
         "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def second_run(engine_run) -> Path:
    """engine_run's command with another random init (--seed 1), beside it: <tmp>/runs/r18s1.

    The same model and layers on the same probe, so unit i is the same slot in both runs (the
    shape of a checkpoint comparison)."""
    from dissect.__main__ import main
    info = __import__("json").loads((engine_run / "run.json").read_text())
    probe = info["config"]["probe"]
    out = engine_run.parent / "r18s1"
    assert main(["run", "--model", "resnet18", "--weights", "none", "--seed", "1",
                 "--layer", "layer3,layer4", "--probe", probe, "--batch-size", "20",
                 "--workers", "0", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_labelled_run(tmp_path_factory):
    """Factory: tiny_labelled_run(layer, out, seed, labels={unit: (label, iou)}) -> run path.

    A real resnet18 run (random weights, 8 synthetic Broden images of 48 px) whose units.csv is
    then relabelled as given, so ablation tests know which units carry a concept.
    """
    import pandas as pd
    from dissect.__main__ import main
    from dissect.probes.synthetic_broden import make_synthetic_broden

    def make(layer: str, out: Path, seed: int, labels: dict[int, tuple[str, float]]) -> Path:
        probe = tmp_path_factory.mktemp("tinyprobe") / "sb"
        make_synthetic_broden(probe, n=8, image_size=48, mask_size=24, seed=seed)
        assert main(["run", "--model", "resnet18", "--weights", "none", "--layer", layer,
                     "--probe", f"broden:{probe}", "--batch-size", "4", "--workers", "0",
                     "--quiet", "--topk", "2", "--out", str(out)]) == 0
        units = out / "layers" / layer / "units.csv"
        df = pd.read_csv(units, keep_default_na=False)
        for unit, (label, iou) in labels.items():
            df.loc[unit, ["label", "iou"]] = [label, iou]
        df.to_csv(units, index=False)
        return out

    return make


@pytest.fixture
def settle():
    """settle(at): wait for the studio's background jobs (studio.background) the page started,
    then rerun the AppTest, as the page's polling fragment does in a browser."""
    def run(at, timeout: float = 240):
        from studio import background as bg
        for job in bg.running():
            assert job.wait(timeout), f"background job {job.label} still running"
        return at.run()
    return run
