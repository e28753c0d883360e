"""Bad input gets one clear line naming the file or key and the fix (CLI exit status ≠ 0)."""
from __future__ import annotations

import errno
import shutil

import pandas as pd
import pytest

from dissect.runs import writer as runs
from dissect.__main__ import main
from dissect.probes.broden import BrodenProbe
from dissect.errors import LayerError
from dissect.errors import ProbeError
from dissect.runs.folder import open_run
from dissect.probes.synthetic_broden import make_synthetic_broden


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    make_synthetic_broden(d, n=8, image_size=48, mask_size=24, seed=4)
    return d


@pytest.fixture
def broden(good, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(good, d)
    return d


def run_cli(probe, out, *extra, layer="layer3"):
    return main(["run", "--model", "resnet18", "--weights", "none", "--layer", layer, "--probe", f"broden:{probe}",
                 "--batch-size", "4", "--workers", "1", "--quiet", "--out", str(out), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_missing_index_column(broden, capsys):
    idx = pd.read_csv(broden / "index.csv", keep_default_na=False)
    idx.drop(columns=["object"]).to_csv(broden / "index.csv", index=False)
    with pytest.raises(ProbeError, match=r"index.csv has no column 'object'.*add the column"):
        BrodenProbe(broden)
    assert run_cli(broden, broden / "run") == 2
    assert "index.csv has no column 'object'" in one_line(capsys)
    assert len(BrodenProbe(broden, categories="color,scene")) == 8    # the other fix works


def test_missing_mask_file(broden, tmp_path, capsys):
    (broden / "images" / "img00005_color.png").unlink()
    assert run_cli(broden, tmp_path / "run") == 2      # raised in a DataLoader worker
    msg = one_line(capsys)
    assert "img00005_color.png" in msg and "row 7" in msg and "column 'color'" in msg
    assert open_run(tmp_path / "run").status == "failed"


def test_corrupt_image(broden, tmp_path, capsys):
    (broden / "images" / "img00002.jpg").write_bytes(b"not a jpeg at all")
    assert run_cli(broden, tmp_path / "run") == 2
    msg = one_line(capsys)
    assert "img00002.jpg" in msg and "cannot be decoded" in msg and "remove that row" in msg


def test_missing_category_table(broden):
    (broden / "c_part.csv").unlink()
    with pytest.raises(ProbeError, match=r"c_part.csv is missing"):
        BrodenProbe(broden)


def test_unknown_layer_suggests_close_names(good, tmp_path, capsys):
    assert run_cli(good, tmp_path / "run", layer="layer33") == 2
    msg = one_line(capsys)
    assert "'layer33'" in msg and "Did you mean: layer3" in msg


@pytest.mark.parametrize("layer", ["fc", "avgpool"])
def test_non_spatial_layer(good, tmp_path, capsys, layer):
    assert run_cli(good, tmp_path / "run", layer=layer) == 2
    msg = one_line(capsys)
    assert f"layer '{layer}'" in msg and "convolutional layer" in msg
    assert issubclass(LayerError, ValueError)


def test_full_disk(good, tmp_path, capsys, monkeypatch):
    def full(path, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(runs, "write_npz", full)
    assert run_cli(good, tmp_path / "run") == 3
    msg = one_line(capsys)
    assert "disk is full" in msg and ".npz" in msg
    run = open_run(tmp_path / "run")
    assert run.status == "failed" and "No space left" in run.info["error"]


def test_full_disk_for_the_activation_cache(good, tmp_path, capsys, monkeypatch):
    """The memmapped cache is allocated up front: a full disk is an error, not a SIGBUS."""
    import os

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    assert run_cli(good, tmp_path / "run") == 3
    msg = one_line(capsys)
    assert "disk is full" in msg and "layer3.acts.npy" in msg
    assert open_run(tmp_path / "run").status == "failed"


def test_other_run_in_out_folder(good, tmp_path, capsys):
    assert run_cli(good, tmp_path / "run", "--limit", "4") == 0
    capsys.readouterr()
    assert run_cli(good, tmp_path / "run", "--limit", "5") == 2
    assert "--overwrite" in one_line(capsys)
    assert run_cli(good, tmp_path / "run", "--limit", "5", "--overwrite") == 0
    assert open_run(tmp_path / "run").info["counts"]["images"] == 5


@pytest.mark.slow
def test_sigterm_marks_cancelled_and_resumes(tmp_path):
    """A SIGTERM mid-run ends with status 'cancelled' (exit 130); the same command resumes."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    make_synthetic_broden(tmp_path / "b", n=40, image_size=64, mask_size=32, seed=5)
    cmd = [sys.executable, "-m", "dissect", "run", "--model", "resnet18", "--weights", "none", "--layer", "layer3",
           "--probe", f"broden:{tmp_path / 'b'}", "--batch-size", "1", "--workers", "0",
           "--quiet", "--out", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            info = json.loads((tmp_path / "run" / "run.json").read_text())
            if info["progress"]["done"] > 0:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 130 and "interrupted" in err
    assert open_run(tmp_path / "run").status == "cancelled"
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert open_run(tmp_path / "run").status == "complete"
