"""`import dissect` is the public face: cheap to import, and the README's notebook runs as written."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_is_cheap_and_names_load_on_use():
    code = ("import sys, dissect; assert 'torch' not in sys.modules, 'torch loaded eagerly'; "
            "names = ['load_model', 'dissect', 'DissectConfig', 'open_run', 'ablate', 'capture', "
            "'intervene', 'open_probe']; assert all(n in dir(dissect) for n in names); "
            "assert all(f'dissect.{n}' in dissect.__doc__ for n in names); "
            "assert callable(dissect.dissect) and dissect.DissectConfig().quantile == 0.005")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]


def test_unknown_name_is_an_attribute_error():
    import dissect
    try:
        dissect.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_readme_notebook_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    promised = re.search(r"It prints `(.*?)`", section).group(1)
    assert p.stdout.strip() == promised
    assert (tmp_path / "runs" / "notebook" / "run.json").exists()
