"""New run page with a Ray cluster: the address field reaches the command, bad addresses are
refused before starting, and a running sharded run shows one progress bar per shard."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _page(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("DISSECT_RUNS", str(root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/new_run.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_new_run_ray_address_and_shard_progress(engine_run, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    going = root / "sharded"
    shutil.copytree(engine_run, going, ignore=shutil.ignore_patterns("cache"))
    info = json.loads((going / "run.json").read_text())
    info.update(status="running", progress={"phase": "forward", "done": 24, "total": 40},
                ray={"address": "local:2", "shards": 2, "threads": 1},
                shards=[{"shard": 0, "images": [0, 20], "phase": "forward", "done": 20,
                         "total": 20, "attempts": 1, "node": "vm (127.0.0.1)", "pid": 11,
                         "finished": True},
                        {"shard": 1, "images": [20, 40], "phase": "forward", "done": 4,
                         "total": 20, "attempts": 2, "node": "vm (127.0.0.1)", "pid": 12,
                         "finished": False}])
    (going / "run.json").write_text(json.dumps(info))
    at = _page(root, monkeypatch)
    bars = [p.proto.text for p in at.get("progress")]
    assert any("shard 0 (images 0–20) · forward: done" in t for t in bars), bars
    assert any("shard 1 (images 20–40) · forward: 4 / 20" in t and "attempt 2" in t
               for t in bars), bars
    at.text_input(key="nr_ray").set_value("local:2").run()
    assert "--ray local:2" in at.code[0].value
    at.text_input(key="nr_ray").set_value("10.0.0.5:6379").run()
    assert "--ray 10.0.0.5:6379" in at.code[0].value
    at.text_input(key="nr_ray").set_value("my cluster; rm -rf /").run()
    assert "--ray" not in at.code[0].value or at.button(key="nr_start").disabled
    assert at.button(key="nr_start").disabled
    assert "local, local:N or HOST:PORT" in " ".join(c.value for c in at.caption)
