"""The studio marks random-init runs with a plain badge, so nobody cites them as trained."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
BADGE = "random weights: a baseline"


def test_random_init_run_shows_the_badge_and_a_trained_one_does_not(engine_run, tmp_path,
                                                                      monkeypatch):
    sys.path.insert(0, str(REPO))
    root = tmp_path / "runs"
    shutil.copytree(engine_run, root / "random", ignore=shutil.ignore_patterns("cache"))
    shutil.copytree(engine_run, root / "trained", ignore=shutil.ignore_patterns("cache"))
    info = json.loads((root / "trained" / "run.json").read_text())
    assert info["random_init"] is True                  # the engine stamped the random one
    info.update(random_init=False, config={**info["config"], "weights": "IMAGENET1K_V1"})
    (root / "trained" / "run.json").write_text(json.dumps(info))
    monkeypatch.setenv("DISSECT_RUNS", str(root))

    def sidebar_text(run: str) -> str:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
        at.query_params["run"] = run
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return "\n".join(str(m.value) for m in at.sidebar.markdown)

    assert BADGE in sidebar_text("random")
    assert BADGE not in sidebar_text("trained")
