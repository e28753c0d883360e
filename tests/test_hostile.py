"""Damaged, hostile and odd input to the CLI: one line naming the thing and the fix, a non-zero
exit status, no traceback, and no data lost (issue 10, "the whole class")."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dissect.__main__ import main
from dissect.runs import open_run
from dissect.synthetic_broden import make_synthetic_broden


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile") / "sb"
    make_synthetic_broden(d, n=8, image_size=48, mask_size=24, seed=3)
    return d


@pytest.fixture(scope="module")
def clean(probe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hclean") / "run"
    assert run_cli(probe_dir, out) == 0
    return out


def run_cli(probe, out, *extra, layer="layer3"):
    return main(["run", "--model", "resnet18", "--weights", "none", "--layer", layer,
                 "--probe", f"broden:{probe}", "--batch-size", "4", "--workers", "0", "--quiet",
                 "--out", str(out), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [l for l in err if not l.startswith("note: ")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---- damaged complete runs: detected, named, repaired by the command the message gives
@pytest.mark.parametrize("rel, damage, says", [
    ("layers/layer3/iou.npy", "truncate", "layers/layer3/iou.npy is truncated"),
    ("layers/layer3/imgmax.npy", "delete", "layers/layer3/imgmax.npy is missing"),
    ("layers/layer3/topk.npz", "truncate", "layers/layer3/topk.npz is not a readable .npz"),
    ("layers/layer3/iou.npy", "reshape", "layers/layer3/iou.npy has shape [3, 4]"),
])
def test_damaged_complete_run_is_named_and_repaired(probe_dir, clean, tmp_path, capsys, rel,
                                                   damage, says):
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    f = out / rel
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:150])
    elif damage == "delete":
        f.unlink()
    else:
        np.save(f, np.zeros((3, 4), np.float32))
    assert run_cli(probe_dir, out) == 2
    msg = one_line(capsys)
    assert says in msg and "says complete but is damaged" in msg and "--overwrite" in msg, msg
    assert open_run(out).status == "complete"          # nothing else was touched
    assert run_cli(probe_dir, out, "--overwrite") == 0
    for name in ("iou.npy", "imgmax.npy"):
        np.testing.assert_array_equal(np.load(clean / "layers/layer3" / name),
                                      np.load(out / "layers/layer3" / name))


@pytest.mark.parametrize("rel", ["layers/layer3/topk.npz", "layers/layer3/units.csv",
                                 "concepts.csv", "layers/layer3/iou.npy"])
def test_export_of_damaged_file_is_one_line(clean, tmp_path, capsys, rel):
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    f = out / rel
    f.write_bytes(b"\x00\xff garbage \x93NUMPY" if rel.endswith((".npz", ".npy")) else b"")
    code = main(["export", str(out), "--format", "netdissect", "--out", str(tmp_path / "t.csv")])
    assert code == 2
    msg = one_line(capsys)
    assert rel in msg and "cannot be read" in msg and "--overwrite" in msg, msg
