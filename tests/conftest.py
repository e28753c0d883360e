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
    from dissect.synthetic_broden import make_synthetic_broden
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
