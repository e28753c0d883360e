"""The README and docs/ stay honest: the site builds with `mkdocs build --strict` (every link
resolves), every `python -m dissect` command they print parses against the real command line,
the `sweep --runs` TOML example plans its runs, and the README's five-minute tour runs as
written on a small ToyWorld (slow)."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)


def commands(text: str) -> list[str]:
    """`python -m dissect ...` / `dissect ...` command lines in the fenced blocks of `text`,
    continuation lines joined and comments dropped."""
    out = []
    for _lang, body in FENCE.findall(text):
        body = re.sub(r"\\\n\s*", " ", body)
        for line in body.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("$ "):
                line = line[2:]
            if line.startswith(("python -m dissect ", "dissect ")):
                out.append(line)
    return out


def test_readme_is_a_first_page():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 8 * 1024 + 512, len(text.encode())
    for heading in ("## Two commands", "## A five-minute tour", "## Python", "## Where to go next"):
        assert heading in text
    for target in re.findall(r"\]\(((?:docs/)[^)#]+|LICENSE|CITATION.cff)\)", text):
        assert (REPO / target).exists(), target
    assert (REPO / "docs" / "img" / "unit-page.png").stat().st_size > 20_000


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                        str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert (tmp_path / "site" / "limits" / "index.html").exists()


def test_every_printed_command_parses():
    """Each command in the README and docs names real subcommands and options (templates
    with [optional] parts or `...` are skipped); parsing runs nothing."""
    from dissect.__main__ import build_parser
    parser = build_parser()
    seen = 0
    for page in PAGES:
        for line in commands(page.read_text()):
            if "[" in line or "..." in line or "|" in line:
                continue
            argv = shlex.split(line)
            argv = argv[3:] if argv[0] == "python" else argv[1:]
            argv = [a for a in argv if a != "--offline"]
            try:
                parser.parse_args(argv)
            except SystemExit as e:
                if e.code:
                    raise AssertionError(f"{page.name}: `{line}` does not parse") from None
            seen += 1
    assert seen >= 25, seen


def test_sweep_toml_example_plans_its_runs(tmp_path):
    text = (REPO / "docs" / "scale-out.md").read_text()
    toml = next(body for lang, body in FENCE.findall(text) if lang == "toml")
    (tmp_path / "checkpoints.toml").write_text(toml)
    from dissect.commands.sweep import plan_runs
    args = argparse.Namespace(runs=str(tmp_path / "checkpoints.toml"), out_root=str(tmp_path / "o"),
                              models=None, weights="default", layers=None, probe=None,
                              limit=None, batch_size=32, device="cpu", seed=0, no_acts=False)
    plans = plan_runs(args)
    assert len(plans) >= 2
    assert all(cfg.probe and cfg.layers for cfg, _out in plans)


def tour_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## A five-minute tour"):]
    body = next(body for lang, body in FENCE.findall(section) if lang == "bash")
    return [l.strip() for l in body.splitlines() if l.strip() and not l.startswith("#")]


@pytest.mark.slow
def test_tour_runs_as_written_on_a_small_toyworld(tmp_path):
    """The tour's commands, in order, in a fresh folder; only the sizes shrink (a 400-image
    world with 200 permutations, 150 images to ablate on) so the test takes minutes, not ten."""
    cmds = tour_commands()
    assert cmds[0] == "python -m dissect default-run" and len(cmds) == 5
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "DISSECT_CACHE": str(REPO / ".cache")}
    outputs = []
    for line in cmds:
        line = line.replace("default-run", "default-run --n 400 --null 200")
        line = re.sub(r"toyworld:\d+", "toyworld:150", line)
        argv = shlex.split(line)
        p = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"{line}\n{p.stderr[-3000:]}"
        outputs.append(p.stdout + p.stderr)
    run, explained, ablated, features, drawn = outputs
    assert "[3/3] formulas ready" in run and "significant" in run
    assert (tmp_path / "runs" / "toyworld-default" / "layers" / "conv6" / "formulas.json").exists()
    assert "conv6 formulas:" in explained and "# conv6" in explained
    assert "sun" in explained
    beach = re.search(r"beach\s+\d+\s+([\d.]+)%\s+([\d.]+)%", ablated)
    assert beach and float(beach.group(2)) < float(beach.group(1)) - 30, ablated[-2000:]
    assert "conv6@sae512: R²" in features
    assert (tmp_path / "runs" / "toyworld-default" / "layers" / "conv6@sae512" / "units.csv").exists()
    assert sorted(p.name for p in (tmp_path / "runs" / "vis-sun").glob("unit_*.png")), drawn[-2000:]
