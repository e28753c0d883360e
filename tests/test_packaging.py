"""`pip install .`: a wheel with the `dissect` command, the app, ToyWorld weights and data files."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_command_app_weights_and_data(tmp_path):
    src = tmp_path / "src"                       # build from a copy: the checkout stays clean
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ["dissect", "segmenters", "pages", "studio", "dissect_studio"]:
        if (REPO / d).is_dir():       # dissect_studio/ holds links: copied as links
            shutil.copytree(REPO / d, src / d, ignore=ignore, symlinks=True)
    for f in ["app.py", "pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy2(REPO / f, src / f)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(tmp_path / "w"),
                            str(src)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    [whl] = list((tmp_path / "w").glob("dissect_studio-*.whl"))
    names = set(zipfile.ZipFile(whl).namelist())
    for f in ["dissect_studio/app.py", "dissect_studio/pages/overview.py",
              "dissect_studio/studio/nav.py", "dissect/__main__.py", "dissect/models/fetch.py",
              "dissect/commands/data.py", "dissect/commands/studio.py",
              "dissect/toyworld/weights/toyworld_cnn.safetensors",
              "dissect/toyworld/weights/toyworld_cnn.json",
              "segmenters/ade20k_classes.txt", "segmenters/color_terms.csv"]:
        assert f in names, f
    assert not any(n.startswith("tests/") for n in names)
    # one top-level name besides dissect and segmenters: no generic `app`, `pages`, `studio`
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"dissect", "segmenters", "dissect_studio"}, top
    assert not any(n.endswith(".py") and "/" not in n for n in names), "a top-level module"
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dissect = dissect.__main__:console" in zipfile.ZipFile(whl).read(meta).decode()

    # installed apart from the checkout: the console command runs and finds its packaged files
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-index", "--target", str(site), str(whl)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run([str(site / "bin" / "dissect"), *a], cwd=tmp_path,  # noqa: E731
                                    env=env, capture_output=True, text=True, timeout=300)
    v = run("--version")
    assert v.returncode == 0 and v.stdout.startswith("dissect "), v.stderr
    layers = run("layers", "--model", "toyworld", "--json")   # trained weights from the wheel
    assert layers.returncode == 0, layers.stderr[-2000:]
    assert '"conv6"' in layers.stdout
    s = run("studio", "--dry-run")
    assert s.returncode == 0 and "--server.address 127.0.0.1" in s.stdout
    assert str(site / "dissect_studio" / "app.py") in s.stdout
    # the installed app runs (its pages and studio/ found beside it) on an empty runs folder
    code = ("from streamlit.testing.v1 import AppTest; "
            f"at = AppTest.from_file({str(site / 'dissect_studio' / 'app.py')!r}, "
            "default_timeout=120).run(); "
            "assert not at.exception, [e.value for e in at.exception]; print('ok')")
    app = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300,
                         env={**env, "DISSECT_RUNS": str(tmp_path / "runs")})
    assert app.returncode == 0 and "ok" in app.stdout, (app.stdout + app.stderr)[-2000:]
