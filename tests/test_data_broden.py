"""`dissect data broden`: a locally served, generated Broden zip; killed halfway, then finished."""
from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from dissect.__main__ import main
from dissect.commands.data import unpack_broden
from dissect.errors import FetchError
from dissect.probes.synthetic_broden import make_synthetic_broden
from localhttp import serve

REPO = Path(__file__).resolve().parent.parent


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def broden_zip(tmp_path_factory) -> tuple[bytes, dict[str, bytes]]:
    """(zip bytes laid out as NetDissect's: broden1_224/index.csv ..., the source tree)."""
    src = tmp_path_factory.mktemp("src") / "broden1_224"
    make_synthetic_broden(src, n=30, image_size=64, mask_size=32, seed=3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, f"broden1_224/{p.relative_to(src)}")
    return buf.getvalue(), tree(src)


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)


def test_killed_download_restarts_resumes_and_is_identical(tmp_path, broden_zip, capsys):
    data, source = broden_zip
    out = tmp_path / "data"
    part = out / "broden1_224.zip.part"
    with serve({"/data/broden1_224.zip": data}) as srv:
        srv.throttle, srv.chunk = 0.05, 1024          # ~4.5 s for the ~90 kB zip
        url = srv.url("/data/broden1_224.zip")
        proc = subprocess.Popen([sys.executable, "-m", "dissect", "data", "broden", "--out",
                                 str(out), "--url", url, "--quiet"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.stat().st_size > len(data) // 2):
            assert proc.poll() is None and time.monotonic() < deadline, "no partial download"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kept = part.stat().st_size
        assert 0 < kept < len(data) and not (out / "broden1_224").exists()
        srv.throttle = 0.0
        assert main(["data", "broden", "--out", str(out), "--url", url, "--keep-zip",
                     "--quiet"]) == 0
        assert srv.requests[-1] == ("/data/broden1_224.zip", f"bytes={kept}-")
    assert capsys.readouterr().out.strip() == f"--probe broden:{out / 'broden1_224'}"
    assert (out / "broden1_224.zip").read_bytes() == data
    assert tree(out / "broden1_224") == source
    assert sorted(p.name for p in out.iterdir()) == ["broden1_224", "broden1_224.zip",
                                                     "broden1_224.zip.source.json"]   # its URL
    # a second call finds it in place and only checks it
    assert main(["data", "broden", "--out", str(out), "--url", "http://127.0.0.1:9/x.zip"]) == 0


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_404_not_a_zip_and_not_broden_are_one_line_errors(tmp_path, capsys):
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("photos/cat.jpg", b"\xff\xd8 not really")
    with serve({"/junk.zip": b"<html>moved</html>", "/other.zip": other.getvalue()}) as srv:
        out = tmp_path / "d"
        assert main(["data", "broden", "--out", str(out), "--url", srv.url("/gone.zip"), "--quiet"]) == 2
        assert "HTTP 404" in _one_line_error(capsys)
        assert main(["data", "broden", "--out", str(out), "--url", srv.url("/junk.zip"), "--quiet"]) == 2
        assert "is not a zip archive (removed it)" in _one_line_error(capsys)
        assert main(["data", "broden", "--out", str(out), "--url", srv.url("/other.zip"), "--quiet"]) == 2
        assert "not Broden: it has no index.csv" in _one_line_error(capsys)
    assert not out.exists() or list(out.iterdir()) == []


def test_full_disk_while_unpacking_leaves_nothing_that_looks_complete(tmp_path, broden_zip):
    data, _source = broden_zip
    zpath = tmp_path / "broden1_224.zip"
    zpath.write_bytes(data)
    biggest = max(i.file_size for i in zipfile.ZipFile(zpath).infolist())
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (biggest // 2, hard))
    try:
        with pytest.raises(FetchError, match="disk filled up while unpacking .* zip is kept"):
            unpack_broden(zpath, tmp_path / "broden1_224")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert sorted(os.listdir(tmp_path)) == ["broden1_224.zip"]
    assert unpack_broden(zpath, tmp_path / "broden1_224") == 30   # with space, it completes
