"""Hardening, round 2 (issue 21): downloads. Caches keyed by what they hold, a deadline and
a minimum rate, and a server lying about its length is a failed download (a real HTTP server on
127.0.0.1, tests/localhttp.py)."""
from __future__ import annotations

import io
import json
import os
import time
import zipfile

import pytest
import torch

from dissect.errors import FetchError
from tests.localhttp import serve
from tests.test_hostile_round2 import cli


# ---------------------------------------------------------------- 4. caches keyed by what they hold
def test_weights_cache_is_keyed_by_the_full_url(tmp_path, monkeypatch):
    from dissect.models.fetch import fetch_weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    blobs = {}
    for name, m in (("a", a), ("b", b)):
        buf = io.BytesIO()
        torch.save(m.state_dict(), buf)
        blobs[f"/{name}/model.pth"] = buf.getvalue()
    with serve(blobs) as srv:
        pa, pb = fetch_weights(srv.url("/a/model.pth"), progress=False), \
            fetch_weights(srv.url("/b/model.pth"), progress=False)
    assert pa != pb and pa.name.endswith("-model.pth")
    assert torch.equal(torch.load(pb, weights_only=True)["weight"], b.weight)
    rec = json.loads(pb.with_name(pb.name + ".source.json").read_text())
    assert rec["url"].endswith("/b/model.pth") and rec["size"] == pb.stat().st_size


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


def test_broden_zip_is_tied_to_its_url_and_a_bad_one_names_where_it_came_from(tmp_path, capsys,
                                                                               monkeypatch):
    from dissect.probes.synthetic_broden import make_synthetic_broden
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)
    src = tmp_path / "src" / "broden1_224"
    make_synthetic_broden(src, n=6, image_size=32, mask_size=16, seed=1)
    good = _zip({f"broden1_224/{p.relative_to(src)}": p.read_bytes()
                 for p in sorted(src.rglob("*")) if p.is_file()})
    fake = _zip({"broden1_224/index.csv": b"image,split\nnope.jpg,train\n"})
    out = tmp_path / "data"
    with serve({"/a/broden1_224.zip": fake, "/b/broden1_224.zip": good}) as srv:
        rc, err = cli(capsys, "data", "broden", "--out", out, "--url", srv.url("/a/broden1_224.zip"),
                      "--quiet", "--keep-zip")
        assert rc == 2 and "/a/broden1_224.zip" in err and "/b/" not in err
        assert not (out / "broden1_224.zip").exists()          # a bad zip never serves again
        rc, _out = cli(capsys, "data", "broden", "--out", out, "--url",
                       srv.url("/b/broden1_224.zip"), "--quiet")
        assert rc == 0 and srv.requests[-1][0] == "/b/broden1_224.zip"


def test_a_cached_zip_from_another_url_is_not_reused(tmp_path, monkeypatch):
    from dissect.models.fetch import fetch
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)
    with serve({"/a/x.zip": b"A" * 100, "/b/x.zip": b"B" * 120}) as srv:
        fetch(srv.url("/a/x.zip"), tmp_path / "x.zip", progress=False)
        assert fetch(srv.url("/b/x.zip"), tmp_path / "x.zip", progress=False).read_bytes() \
            == b"B" * 120


# ---------------------------------------------------------------- 6. download deadlines
def test_slow_server_fails_by_the_minimum_rate(tmp_path, monkeypatch):
    from dissect.models.fetch import fetch
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)
    monkeypatch.setenv("DISSECT_DOWNLOAD_MIN_RATE", "1000")
    monkeypatch.setenv("DISSECT_DOWNLOAD_WINDOW", "1")
    with serve({"/slow.bin": b"x" * 5000}) as srv:
        srv.throttle, srv.chunk = 0.05, 1                  # ~20 bytes/s
        t = time.monotonic()
        with pytest.raises(FetchError, match="too slow: .* below --download-min-rate 1000"):
            fetch(srv.url("/slow.bin"), tmp_path / "slow.bin", progress=False)
        assert time.monotonic() - t < 8


def test_overall_deadline(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)
    monkeypatch.delenv("DISSECT_DOWNLOAD_DEADLINE", raising=False)
    with serve({"/d/broden1_224.zip": b"x" * 400_000}) as srv:
        srv.throttle, srv.chunk = 0.02, 4096               # ~200 kB/s: fast enough, too long
        t = time.monotonic()
        rc, err = cli(capsys, "data", "broden", "--out", tmp_path, "--url",
                      srv.url("/d/broden1_224.zip"), "--quiet", "--download-deadline", "1")
        assert rc == 2 and "passed its deadline of 1 s" in err and time.monotonic() - t < 8
    os.environ.pop("DISSECT_DOWNLOAD_DEADLINE", None)


def test_a_server_lying_about_its_length_is_a_failed_download(tmp_path, monkeypatch):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading
    from dissect.models.fetch import fetch
    monkeypatch.delenv("DISSECT_OFFLINE", raising=False)

    class Liar(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2000")          # sends 1000
            self.end_headers()
            self.wfile.write(b"y" * 1000)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/f.bin"
    try:
        with pytest.raises(FetchError, match="run the same command again"):
            fetch(url, tmp_path / "f.bin", progress=False)      # could be a cut: resumable
        for _ in range(2):                                      # the same short end: a liar
            with pytest.raises(FetchError, match="misstates the length"):
                fetch(url, tmp_path / "f.bin", progress=False)
        assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    finally:
        srv.shutdown()
        srv.server_close()
