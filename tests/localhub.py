"""A Hugging Face hub stand-in on 127.0.0.1: `/{repo}/resolve/{revision}/{file}` as the hub serves it.

    with serve_hub({"timm/resnet18.a1_in1k": {"model.safetensors": data}}) as hub:
        env["HF_ENDPOINT"] = hub.endpoint        # huggingface_hub reads it at import
        hub.requests                             # [(method, path), ...]

HEAD and GET answer with the headers huggingface_hub checks (X-Repo-Commit, ETag,
Content-Length); a missing file is a 404 with X-Error-Code EntryNotFound (RepoNotFound for an
unknown repo), as on the hub. `GET /api/models?search=W` lists the served repo ids containing W.
"""
from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from localhttp import running

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.requests: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Hub

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        srv = self.server
        srv.requests.append((self.command, self.path))
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/api/models":
            words = urllib.parse.parse_qs(url.query).get("search", [""])[0].lower()
            data = json.dumps([{"id": r, "modelId": r} for r in srv.repos
                               if words in r.lower()]).encode()
            return self._send(200, data, body, {"Content-Type": "application/json"})
        m = _RESOLVE.match(url.path)
        if not m or m["repo"] not in srv.repos:
            return self._send(404, b"Repository not found", body,
                              {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        data = srv.repos[m["repo"]].get(urllib.parse.unquote(m["file"]))
        if data is None:
            return self._send(404, b"Entry not found", body,
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT,
                               "X-Error-Message": "Entry not found"})
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        self._send(200, data, body, {"X-Repo-Commit": COMMIT, "ETag": etag,
                                     "Content-Type": "application/octet-stream"})

    def _send(self, code: int, data: bytes, body: bool, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            try:
                self.wfile.write(data)
            except OSError:
                pass


@contextmanager
def serve_hub(repos: dict[str, dict[str, bytes]]):
    """Serve `repos` (repo id -> {filename: bytes}) on 127.0.0.1 at a free port; stops on exit."""
    with running(_Hub(repos)) as srv:
        yield srv
