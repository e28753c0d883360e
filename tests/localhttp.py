"""A real HTTP server on 127.0.0.1 for download tests (threaded, started and stopped by the test).

    with serve({"/a.zip": data}) as srv:          # Range support on by default
        url = srv.url("/a.zip")
        srv.cut_after = 1000                      # next response stops after 1000 body bytes
        srv.throttle, srv.chunk = 0.01, 4096      # seconds between chunks of this many bytes
        srv.requests                              # [(path, Range header or None), ...]
"""
from __future__ import annotations

import re
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 16 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes], ranges: bool):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.ranges = ranges
        self.cut_after: int | None = None
        self.throttle = 0.0
        self.chunk = CHUNK
        self.requests: list[tuple[str, str | None]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:   # keep test output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", rng or "") if srv.ranges else None
        if m:
            start = int(m[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if srv.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        limit = len(body)
        cut = srv.cut_after
        if cut is not None:
            srv.cut_after = None          # one cut-off response, then whole ones
            limit = min(limit, cut)
        try:
            step = srv.chunk
            for i in range(0, limit, step):
                self.wfile.write(body[i:min(i + step, limit)])
                if srv.throttle:
                    self.wfile.flush()
                    time.sleep(srv.throttle)
            self.wfile.flush()
            if limit < len(body):
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:                   # the client went away (a killed download)
            pass


@contextmanager
def serve(files: dict[str, bytes], *, ranges: bool = True):
    """Serve `files` (URL path -> bytes) on 127.0.0.1 at a free port; stops on exit."""
    with running(_Server(files, ranges)) as srv:
        yield srv


@contextmanager
def running(srv):
    """Run an HTTP server (bound already) in a daemon thread; shut down and closed on exit."""
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
