"""Downloads against a real HTTP server on 127.0.0.1: resume, size check, 404, offline, weights URLs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

from dissect.errors import FetchError
from dissect.models.fetch import fetch
from dissect.errors import ModelError
from dissect.models.registry import load_model
from localhttp import serve

REPO = Path(__file__).resolve().parent.parent
DATA = bytes(range(256)) * 4000          # ~1 MB, every offset distinct mod 256


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)


def test_fetch_downloads_once_and_reuses(tmp_path):
    with serve({"/f.bin": DATA}) as srv:
        dest = fetch(srv.url("/f.bin"), tmp_path / "f.bin", progress=False)
        assert dest.read_bytes() == DATA
        assert not (tmp_path / "f.bin.part").exists()
        fetch(srv.url("/f.bin"), tmp_path / "f.bin", progress=False)
        assert len(srv.requests) == 1            # the cached file is reused, no request


def test_cut_off_download_is_never_the_file_and_resumes_with_range(tmp_path):
    with serve({"/f.bin": DATA}) as srv:
        srv.cut_after = 300_000
        with pytest.raises(FetchError, match=r"stopped at 300000 of 1024000 bytes.*resume"):
            fetch(srv.url("/f.bin"), tmp_path / "f.bin", progress=False)
        assert not (tmp_path / "f.bin").exists()
        assert (tmp_path / "f.bin.part").stat().st_size == 300_000
        dest = fetch(srv.url("/f.bin"), tmp_path / "f.bin", progress=False)
        assert srv.requests[-1] == ("/f.bin", "bytes=300000-")
        assert dest.read_bytes() == DATA


def test_server_without_range_starts_over(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)   # junk from an earlier try
    with serve({"/f.bin": DATA}, ranges=False) as srv:
        assert fetch(srv.url("/f.bin"), tmp_path / "f.bin", progress=False).read_bytes() == DATA


def test_size_check_catches_a_short_file(tmp_path):
    with serve({"/f.bin": DATA}) as srv:
        with pytest.raises(FetchError, match="stopped at 1024000 of 2000000 bytes"):
            fetch(srv.url("/f.bin"), tmp_path / "f.bin", expected_size=2_000_000, progress=False)
    assert not (tmp_path / "f.bin").exists()


def test_404_is_one_clear_error(tmp_path):
    with serve({}) as srv:
        with pytest.raises(FetchError, match=r"answered HTTP 404 .*check the URL"):
            fetch(srv.url("/nope.zip"), tmp_path / "nope.zip", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_offline_and_no_route_fail_within_seconds(tmp_path, monkeypatch):
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nothing listens there now
    t = time.monotonic()
    with pytest.raises(FetchError, match=r"no route to 127\.0\.0\.1"):
        fetch(f"http://127.0.0.1:{port}/w.pth", tmp_path / "w.pth", progress=False)
    monkeypatch.setenv("DISSECT_OFFLINE", "1")
    with pytest.raises(FetchError) as e:
        fetch("https://example.org/w.pth", tmp_path / "w.pth", progress=False)
    msg = str(e.value)
    assert "offline mode" in msg and "https://example.org/w.pth" in msg and str(tmp_path) in msg
    assert time.monotonic() - t < 5


def test_weights_url_downloads_once_verifies_and_works_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ref = torchvision.models.squeezenet1_1(weights=None, num_classes=7)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "sq.pth.tar")
    with serve({"/m/sq.pth.tar": (tmp_path / "sq.pth.tar").read_bytes(),
                "/m/junk.pth": b"not a checkpoint"}) as srv:
        url = srv.url("/m/sq.pth.tar")
        lm = load_model("squeezenet1_1", url)
        (cached,) = (tmp_path / "torch" / "hub" / "checkpoints").glob("*-sq.pth.tar")  # URL-keyed
        assert cached.is_file() and lm.weights == url and not lm.random_init
        for a, b in zip(lm.model.state_dict().values(), ref.state_dict().values()):
            assert torch.equal(a, b)
        with pytest.raises(ModelError, match="not a usable checkpoint, removed it"):
            load_model("squeezenet1_1", srv.url("/m/junk.pth"))
        assert not list(cached.parent.glob("*junk.pth*"))
        n = len(srv.requests)
    monkeypatch.setenv("DISSECT_OFFLINE", "1")   # server gone, offline: the cache serves it
    assert load_model("squeezenet1_1", url).model.classifier[1].out_channels == 7
    assert n == 2


def test_enum_weights_offline_names_file_place_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("DISSECT_OFFLINE", "1")
    t = time.monotonic()
    with pytest.raises(ModelError) as e:
        load_model("resnet18")                  # the default is DEFAULT, i.e. pretrained
    msg = str(e.value)
    assert time.monotonic() - t < 5
    assert "ResNet18_Weights.IMAGENET1K_V1" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "--weights none" in msg


def test_cli_offline_flag_anywhere_version_and_quiet_broken_pipe(tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("DISSECT_OFFLINE", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "dissect", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    v = run("--version")
    assert v.returncode == 0 and v.stdout.startswith("dissect ")
    p = run("layers", "--model", "resnet18", "--weights", "DEFAULT", "--offline")
    assert p.returncode == 2 and "offline mode" in p.stderr and "Traceback" not in p.stderr
    # `| head`: the reader is gone before the listing is written
    proc = subprocess.Popen([sys.executable, "-m", "dissect", "layers", "--model", "toyworld"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 141
