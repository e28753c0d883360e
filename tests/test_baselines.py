"""Baselines: a Haar rotation of the unit basis (known answer: planted axis-aligned detectors
are lost), and a linked random-init run."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from dissect.__main__ import main
from dissect.trust.baselines import baseline_counts, haar_orthogonal
from dissect.runs.folder import open_run
from dissect.probes.synthetic_broden import make_synthetic_broden

REPO = Path(__file__).resolve().parent.parent


def test_haar_orthogonal_is_orthogonal_and_seeded():
    q = haar_orthogonal(64, seed=3)
    torch.testing.assert_close(q @ q.t(), torch.eye(64), atol=1e-5, rtol=0)
    assert torch.equal(q, haar_orthogonal(64, seed=3))
    assert not torch.equal(q, haar_orthogonal(64, seed=4))


def test_rotation_loses_planted_detectors(tmp_path):
    make_synthetic_broden(tmp_path / "sb", n=40, image_size=64, mask_size=32, seed=3,
                          image_format="png")
    out = tmp_path / "run"
    assert main(["run", "--model", f"{REPO / 'tests' / 'planted_model.py'}:build",
                 "--layer", "units", "--probe", f"broden:{tmp_path / 'sb'}", "--quantile", "0.02",
                 "--baseline", "rotation", "--workers", "0", "--quiet", "--out", str(out)]) == 0
    real = pd.read_csv(out / "layers" / "units" / "units.csv", keep_default_na=False)
    rot = json.loads((out / "layers" / "units" / "baseline_rotation.json").read_text())
    assert real.loc[[0, 1], "iou"].min() > 0.2          # the two planted detectors
    assert rot["units"] == len(real)
    rotated = pd.read_csv(out / "layers" / "units" / "baseline_rotation_units.csv")
    assert rotated["iou"].max() < 0.2        # the detectors are spread over every turned unit
    assert rot["interpretable"] == int((rotated["iou"] >= 0.04).sum())
    assert baseline_counts(open_run(out), "units")["rotation"] == rot


def test_random_init_baseline_is_a_linked_run(tmp_path):
    make_synthetic_broden(tmp_path / "sb", n=12, image_size=64, mask_size=32, seed=1)
    out = tmp_path / "run"
    assert main(["run", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
                 "--probe", f"broden:{tmp_path / 'sb'}", "--baseline", "random-init",
                 "--workers", "0", "--quiet", "--out", str(out)]) == 0
    run = open_run(out)
    assert run.info["baselines"] == {"random-init": "baselines/random-init"}
    assert open_run(out / "baselines" / "random-init").status == "complete"
    counts = baseline_counts(run, "layer4")["random-init"]
    assert counts["units"] == 512 and 0 <= counts["interpretable"] <= 512
