"""Run folders (atomic writes, reading, listing) and the export formats, through the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dissect.runs import atomic as runs
from dissect.__main__ import main
from dissect.errors import RunError
from dissect.runs.export import export_run
from dissect.runs.writer import RunWriter
from dissect.runs.folder import list_runs, open_run
from dissect.probes.synthetic_broden import make_synthetic_broden


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_synthetic_broden(root / "sb", n=12, image_size=48, mask_size=24, seed=3)
    rc = main(["run", "--model", "resnet18", "--weights", "none", "--layer", "layer2,layer3",
               "--probe", f"broden:{root / 'sb'}", "--batch-size", "4", "--workers", "0",
               "--quiet", "--topk", "3", "--out", str(root / "r18")])
    assert rc == 0
    return root


def test_cli_run_is_complete_and_listed(cli_run):
    run = open_run(cli_run / "r18")
    assert run.status == "complete" and run.layers == ["layer2", "layer3"]
    cfg = run.config
    assert cfg["model"] == "resnet18" and cfg["probe"].startswith("broden:")
    assert cfg["quantile"] == 0.005 and cfg["denominator"] == "nd"
    assert [r.path for r in list_runs(cli_run)] == [run.path]
    units = run.units("layer3")
    assert units["unit"].tolist() == list(range(256))
    assert {"unit", "category", "label", "concept", "iou", "threshold"} <= set(units.columns)
    # rerunning a complete run is a no-op
    assert main(["run", "--model", "resnet18", "--weights", "none", "--layer", "layer2,layer3", "--probe",
                 f"broden:{cli_run / 'sb'}", "--batch-size", "4", "--workers", "0", "--quiet",
                 "--topk", "3", "--out", str(cli_run / "r18")]) == 0


def test_export_netdissect_layout(cli_run, capsys):
    assert main(["export", str(cli_run / "r18"), "--format", "netdissect", "--layer", "layer3"]) == 0
    path = capsys.readouterr().out.strip()
    t = pd.read_csv(path, keep_default_na=False)
    units = open_run(cli_run / "r18").units("layer3")
    assert sorted(t.unit) == list(range(1, 257))                 # 1-indexed
    assert list(t.columns[:4]) == ["unit", "category", "label", "score"]
    assert list(t.columns[4:9]) == ["color-label", "color-truth", "color-activation",
                                    "color-intersect", "color-iou"]
    assert (np.diff(t.score) <= 0).all()                         # sorted by score
    row = t.iloc[0]
    u = units.iloc[row.unit - 1]
    assert (row.label, row.category) == (u.label, u.category)
    assert row.score == pytest.approx(u.iou)


def test_export_json_parquet_csv(cli_run, tmp_path):
    run = cli_run / "r18"
    (j,) = export_run(run, "json", out=tmp_path / "u.json")
    doc = json.loads(j.read_text())
    assert set(doc["layers"]) == {"layer2", "layer3"} and len(doc["layers"]["layer3"]) == 256
    assert doc["layers"]["layer3"][0]["unit"] == 0
    (pq,) = export_run(run, "parquet", out=tmp_path / "u.parquet")
    df = pd.read_parquet(pq)
    assert len(df) == 128 + 256 and df.layer.unique().tolist() == ["layer2", "layer3"]
    (c,) = export_run(run, "csv", layer="layer2")
    assert c == run / "export" / "units.csv" and len(pd.read_csv(c)) == 128
    paths = export_run(run, "netdissect", out=tmp_path / "nd")
    assert [p.name for p in paths] == ["tally-layer2.csv", "tally-layer3.csv"]


def test_export_refuses_incomplete_run(tmp_path):
    w = RunWriter(tmp_path / "r", {"layers": ["layer4"], "probe": "toyworld"})
    with pytest.raises(RunError, match="running, not complete"):
        export_run(tmp_path / "r", "csv")
    w.fail(RuntimeError("boom"))
    assert open_run(tmp_path / "r").info["error"] == "boom"


def test_open_run_errors(tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        open_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(RunError, match="format_version 99"):
        open_run(tmp_path)
    (tmp_path / "run.json").write_text("{oops")
    with pytest.raises(RunError, match="not valid JSON"):
        open_run(tmp_path)
    assert list_runs(tmp_path / "missing") == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    f = tmp_path / "a.npy"
    runs.write_npy(f, np.arange(3))

    def boom(fobj, arr):
        fobj.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(runs.np, "save", boom)
    with pytest.raises(OSError):
        runs.write_npy(f, np.arange(5))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(f), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]     # no temp file left
