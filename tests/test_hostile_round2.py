"""Hardening, round 2 (issue 21): the hostile and careless cases on the real commands (CLI);
the app's cases are in test_hostile_round2_app.py, downloads in test_hostile_round2_fetch.py.
Each group is one root cause and its one mechanism: dissect.runs.safe (reader),
dissect.runs.marker (--overwrite), dissect.runs.digest (checksums, finite JSON),
dissect.commands.ranges (option ranges)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dissect.__main__ import main
from dissect.errors import RunError
from dissect.runs.folder import list_runs, open_run

REPO = Path(__file__).resolve().parent.parent


def err_line(capsys) -> str:
    err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("note: ")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, (err_line(capsys) if rc else capsys.readouterr().out)


@pytest.fixture(scope="module")
def run18(tmp_path_factory, tiny_labelled_run) -> Path:
    root = tmp_path_factory.mktemp("round2")
    return tiny_labelled_run("layer4", root / "runs" / "r18", seed=2, labels={4: ("tree", 0.3)})


@pytest.fixture()
def runs(run18, tmp_path) -> Path:
    """A fresh runs root holding a copy of the good run as runs/good."""
    root = tmp_path / "runs"
    shutil.copytree(run18, root / "good")
    return root


def _bad_run(root: Path, name: str, how: str, rel: str = "run.json") -> Path:
    bad = root / name
    shutil.copytree(root / "good", bad)
    f = bad / rel
    f.unlink()
    if how == "dir":
        f.mkdir()
    elif how == "fifo":
        os.mkfifo(f)
    elif how == "zero":
        f.symlink_to("/dev/zero")
    elif how == "outside":
        outside = root.parent / f"outside-{name}"
        shutil.copy(root / "good" / rel, outside)
        f.symlink_to(outside)
    return bad


# ---------------------------------------------------------------- 1. the one safe reader
@pytest.mark.parametrize("how", ["dir", "fifo", "zero"])
def test_bad_run_json_is_listed_damaged_and_breaks_no_other(runs, how):
    _bad_run(runs, "bad", how)
    t = time.monotonic()
    listed = {r.name: r for r in list_runs(runs)}
    assert set(listed) == {"good", "bad"} and time.monotonic() - t < 5
    assert listed["good"].status == "complete" and listed["bad"].status == "damaged"
    assert "run.json of run 'bad' cannot be read" in listed["bad"].damage
    with pytest.raises(RunError, match="cannot be read"):
        open_run(runs / "bad")


@pytest.mark.parametrize("how, rel, says", [
    ("fifo", "layers/layer4/units.csv", "FIFO"),
    ("dir", "concepts.csv", "is a directory"),
])
def test_export_of_a_hostile_file_is_one_line_and_never_hangs(runs, how, rel, says):
    _bad_run(runs, "bad", how, rel)
    p = subprocess.run([sys.executable, "-m", "dissect", "export", str(runs / "bad"),
                        "--format", "json", "--out", str(runs.parent / "x.json")], cwd=REPO,
                       timeout=120, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-800:]
    assert says in p.stderr and p.stderr.count("\n") == 1


@pytest.mark.parametrize("how", ["zero", "outside", "fifo"])
def test_arrays_that_leave_the_folder_or_never_end_are_refused(runs, how):
    _bad_run(runs, "bad", how, "layers/layer4/iou.npy")
    run = open_run(runs / "bad")
    with pytest.raises(RunError, match="layers/layer4/iou.npy of run 'bad' cannot be read: "
                       + ("is a link that leaves its folder" if how != "fifo" else "is a FIFO")):
        run.iou("layer4")
    assert open_run(runs / "good").iou("layer4").ndim == 2


def test_safe_reader_caps_bytes_before_parsing(tmp_path):
    from dissect.runs import safe
    (tmp_path / "big.json").write_bytes(b"[" + b"1," * 5000 + b"1]")
    with pytest.raises(RunError, match="larger than"):
        safe.read_json(tmp_path / "big.json", tmp_path, limit=1000)
    (tmp_path / "nan.json").write_text('{"sigma": NaN}')
    with pytest.raises(RunError, match="not valid JSON"):
        safe.read_json(tmp_path / "nan.json", tmp_path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(RunError, match="cannot be read"):
        safe.read_npy(tmp_path / "obj.npy", tmp_path)          # allow_pickle=False


# ---------------------------------------------------------------- 2. --overwrite and markers
def test_rewrite_overwrite_refuses_a_run_folder_before_any_work(runs, capsys):
    before = sorted(p.relative_to(runs) for p in (runs / "good").rglob("*"))
    t = time.monotonic()
    rc, err = cli(capsys, "rewrite", "--layer", "conv6", "--concept", "sea", "--style", "snow",
                  "--out", runs / "good", "--overwrite")
    assert rc == 2 and "holds a run folder, not an edit folder" in err
    assert time.monotonic() - t < 20
    assert sorted(p.relative_to(runs) for p in (runs / "good").rglob("*")) == before


def test_rewrite_overwrite_refuses_any_other_folder(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    rc, err = cli(capsys, "rewrite", "--layer", "conv6", "--concept", "sea", "--style", "snow",
                  "--out", home, "--overwrite")
    assert rc == 2 and "a folder holding 1 entry (thesis.tex)" in err
    assert (home / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_run_never_writes_into_a_folder_that_holds_something_else(tmp_path, capsys, overwrite):
    data = tmp_path / "data"
    data.mkdir()
    (data / "images.csv").write_text("my own table")
    rc, err = cli(capsys, "run", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
                  "--probe", "toyworld:4", "--quiet", "--out", data, *overwrite)
    assert rc == 2 and "holds a folder holding 1 entry (images.csv), not a run folder" in err
    assert sorted(p.name for p in data.iterdir()) == ["images.csv"]
    assert (data / "images.csv").read_text() == "my own table"


def test_marker_module_is_the_one_check(tmp_path):
    from dissect.runs.marker import OverwriteRefused, kind_of, prepare_out, remove, stamp
    out = tmp_path / "feat"
    assert prepare_out(out, "features") is False           # missing: go ahead
    out.mkdir()
    (out / "a.npy").write_bytes(b"x")
    with pytest.raises(OverwriteRefused, match="holds a folder holding 1 entry"):
        prepare_out(out, "features", overwrite=True)
    stamp(out, "features")
    assert kind_of(out) == "features"
    with pytest.raises(OverwriteRefused, match="pass --overwrite"):
        prepare_out(out, "features")
    with pytest.raises(OverwriteRefused, match="holds a features folder, not a visualisation"):
        prepare_out(out, "visualisation", overwrite=True)
    with pytest.raises(OverwriteRefused):
        remove(out, "edit")
    assert prepare_out(out, "features", overwrite=True) is True and list(out.iterdir()) == []


def test_trace_out_refuses_a_folder(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    rc, err = cli(capsys, "trace", "--model", "toyworld", "--concept", "sun", "--probe",
                  "toyworld:8", "--out", tmp_path / "d")
    assert rc == 2 and "names the JSON FILE" in err
    (tmp_path / "notes.txt").write_text("mine")
    rc, err = cli(capsys, "trace", "--model", "toyworld", "--concept", "sun", "--probe",
                  "toyworld:8", "--out", tmp_path / "notes.txt")
    assert rc == 2 and "did not write" in err and (tmp_path / "notes.txt").read_text() == "mine"


def test_direction_out_refuses_a_run_folder(runs, capsys):
    rc, err = cli(capsys, "direction", "--layer", "conv6", "--concept", "sun", "--probe",
                  "toyworld:12", "--out", runs / "good")
    assert rc == 2 and "holds a run folder" in err


# ---------------------------------------------------------------- 5. checksums, finite JSON
def _direction(tmp_path: Path, name: str = "d") -> Path:
    from dissect.directions.concept import Direction, save_direction
    v = torch.zeros(128)
    v[0] = 1
    d = Direction(v, "conv6", "sun", "mean", "max", 0.97, 3.0, 2.0, "toyworld", "default", 20, 30,
                  unit_auroc=torch.linspace(0, 1, 128))
    return save_direction(d, tmp_path / name)


@pytest.mark.parametrize("tamper, says", [
    (lambda m: m.update(sigma=-m["sigma"]), "sigma is -2.0"),
    (lambda m: m.update(sigma=1.5), "fails its checksum"),
    (lambda m: m.pop("layer"), "key 'layer' is missing"),
    (lambda m: m.update(sigma="2"), "key 'sigma' is '2'"),
    ("nan", "not valid JSON"),
    ("list", "JSON list, not an object"),
    ("pickle", "not valid JSON"),
    ("tensor", "shape [16, 8]"),
])
def test_tampered_direction_is_one_line(tmp_path, capsys, tamper, says):
    from safetensors.torch import save_file
    d = _direction(tmp_path)
    meta = json.loads((d / "direction.json").read_text())
    if tamper == "nan":
        text = json.dumps(meta).replace('"sigma": 2.0', '"sigma": NaN')
    elif tamper == "list":
        text = "[1, 2, 3]"
    elif tamper == "pickle":
        (d / "direction.json").write_bytes(pickle.dumps(meta))
        text = None
    elif tamper == "tensor":
        save_file({"direction": torch.ones(16, 8)}, str(d / "direction.safetensors"))
        text = json.dumps(meta)
    else:
        tamper(meta)
        text = json.dumps(meta)
    if text is not None:
        (d / "direction.json").write_text(text)
    rc, err = cli(capsys, "steer", "--direction", d, "--set", "toyworld:6", "--json")
    assert rc == 2 and says in err, err


def test_json_output_is_finite_or_the_command_fails():
    from dissect.runs.digest import dumps_finite
    assert json.loads(dumps_finite({"a": [1.0, 2]})) == {"a": [1.0, 2]}
    with pytest.raises(RunError, match=r"at 'classes\[0\].p_mean\[1\]'"):
        dumps_finite({"classes": [{"p_mean": [0.1, float("nan")]}]})


def _explained(run18: Path, tmp_path: Path, capsys) -> Path:
    run = tmp_path / "ex"
    shutil.copytree(run18, run)
    assert main(["explain", str(run), "--length", "2", "--beam", "2", "--quiet"]) == 0
    capsys.readouterr()
    return run


def test_zeroed_labels_fail_their_checksum_and_explain_rebuilds_them(run18, tmp_path, capsys):
    from dissect.formulas.labels import LabelIndex
    run = _explained(run18, tmp_path, capsys)
    first = open_run(run).units("layer4")["formula_iou"].to_numpy()
    with np.load(run / "labels.npz") as z:
        arrays = {k: z[k] for k in z.files}
    assert arrays["bits"].any()
    arrays["bits"][:] = 0                                   # counts and meta intact
    np.savez(run / "labels.npz", **arrays)
    with pytest.raises(RunError, match="labels.npz of run 'ex' fails its checksum"):
        LabelIndex.load(run / "labels.npz")
    assert main(["explain", str(run), "--length", "2", "--beam", "2", "--quiet"]) == 0
    again = open_run(run).units("layer4")["formula_iou"].to_numpy()
    assert np.allclose(first.astype(float), again.astype(float), equal_nan=True)
    assert (again.astype(float) > 0).any()


@pytest.mark.parametrize("damage", ["truncate", "range"])
def test_truncated_or_out_of_range_labels_are_named(run18, tmp_path, capsys, damage):
    from dissect.formulas.labels import LabelIndex
    run = _explained(run18, tmp_path, capsys)
    p = run / "labels.npz"
    if damage == "truncate":
        p.write_bytes(p.read_bytes()[:200])
        match = "labels.npz of run 'ex' cannot be read"
    else:
        from dissect.runs.digest import digest
        with np.load(p) as z:
            a = {k: z[k] for k in z.files if k != "sha256"}
        a["entry_img"] = a["entry_img"] + 10_000
        np.savez(p, **a, sha256=np.array(digest(a)))       # a consistent checksum, bad ranges
        match = "entries do not fit"
    with pytest.raises(RunError, match=match):
        LabelIndex.load(p)


# ---------------------------------------------------------------- 7. option ranges
@pytest.mark.parametrize("argv, says", [
    (["trace", "--model", "toyworld", "--concept", "sun", "--probe", "toyworld:8",
      "--batch-size", "0"], "--batch-size 0 must be at least 1"),
    (["trace", "--model", "toyworld", "--concept", "sun", "--probe", "toyworld:8",
      "--limit", "0"], "--limit 0 must be at least 1"),
    (["trace", "--model", "toyworld", "--concept", "sun", "--probe", "toyworld:8",
      "--limit", "-3"], "--limit -3 must be at least 1"),
    (["steer", "--direction", "D", "--set", "toyworld:4", "--random", "-3"],
     "--random -3 must be at least 0"),
    (["steer", "--direction", "D", "--set", "toyworld:4", "--alpha=--"],
     "give at least one number"),
    (["tcav", "--layer", "conv6", "--concept", "sun", "--target", "beach", "--set",
      "toyworld:4", "--sample", "0"], "--sample 0 must be at least 1"),
    (["rewrite", "--layer", "conv6", "--concept", "sea", "--style", "snow", "--rank", "100000",
      "--out", "OUT"], "--rank 100000 must be at most 4,096"),
    (["run", "--model", "resnet18", "--layer", "layer4", "--probe", "toyworld:4",
      "--quantile", "nan", "--out", "OUT"], "--quantile nan must be between 0 and 1"),
    (["rewrite", "--layer", "conv6", "--concept", "sea", "--style", "snow", "--lambda", "inf",
      "--out", "OUT"], "--lambda inf must be a finite number"),
])
def test_numeric_options_are_checked_before_anything_runs(tmp_path, capsys, argv, says):
    d = _direction(tmp_path)
    argv = [str(d) if a == "D" else str(tmp_path / "o") if a == "OUT" else a for a in argv]
    t = time.monotonic()
    rc, err = cli(capsys, *argv)
    assert rc == 2 and says in err and time.monotonic() - t < 20, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content, says", [
    (b"\x00\xff\xfe binary \x89PNG", "is not text"),
    (b'{"concept": "sea", "style": "snow", "exemplars": true}\n', "'exemplars' must be a int"),
    (b'{"concept": "sea", "style": "snow", "exemplars": 1000000}\n', "between 1 and 10,000"),
])
def test_bad_edits_file_is_one_line(tmp_path, capsys, content, says):
    (tmp_path / "e.jsonl").write_bytes(content)
    rc, err = cli(capsys, "rewrite", "--layer", "conv5,conv6", "--edits", tmp_path / "e.jsonl",
                  "--out", tmp_path / "o")
    assert rc == 2 and says in err, err


@pytest.mark.parametrize("toml, says", [
    (b"\x00\x01\xff\xfe", "cannot read it as TOML"),
    (b'[[run]]\nmodel = "resnet18"\nlayers = "layer4"\nprobe = "toyworld:4"\nbatch_size = 0\n',
     "batch_size 0 must be at least 1"),
    (b'[[run]]\nmodel = "resnet18"\nlayers = "layer4"\nprobe = "toyworld:4"\nbatch_size = "x"\n',
     "'batch_size' must be an int"),
    (b'[[run]]\nmodel = "resnet18"\nlayers = 5\nprobe = "toyworld:4"\n', "'layers' must be"),
    (b'[[run]]\nmodel = "resnet18"\nlayers = "layer4"\nprobe = "toyworld:4"\nquantile = 2.0\n',
     "quantile 2.0 must be"),
])
def test_sweep_toml_values_are_checked_before_ray(tmp_path, capsys, monkeypatch, toml, says):
    import dissect.engine.distributed as dist
    monkeypatch.setattr(dist, "ray_cluster", lambda *a, **k: pytest.fail("Ray started"))
    (tmp_path / "s.toml").write_bytes(toml)
    rc, err = cli(capsys, "sweep", "--ray", "local:1", "--runs", tmp_path / "s.toml",
                  "--out-root", tmp_path / "o")
    assert rc == 2 and says in err, err


def test_toyworld_weights_given_a_pickle(tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(pickle.dumps({"conv1.weight": object()}))
    rc, err = cli(capsys, "toyworld", "eval", "--weights", tmp_path / "w.pth", "--n", "4")
    assert rc == 2 and "w.pth" in err and "Traceback" not in err


def test_swapped_edit_weights_are_refused_where_they_are_loaded(tmp_path, capsys):
    from dissect.editing.files import weights_digest
    from dissect.toyworld.model import DEFAULT_WEIGHTS
    edit = tmp_path / "edit"
    edit.mkdir()
    shutil.copy(DEFAULT_WEIGHTS, edit / "weights.safetensors")
    doc = {"figures": {"clean_acc_before": 0.9, "clean_acc_after": 0.9},
           "weights_sha256": weights_digest(edit / "weights.safetensors")}
    (edit / "edit.json").write_text(json.dumps(doc))
    rc, out = cli(capsys, "toyworld", "eval", "--weights", edit / "weights.safetensors",
                  "--n", "4", "--json")
    assert rc == 0 and 0 <= json.loads(out)["accuracy"] <= 1
    doc["weights_sha256"] = "0" * 64                   # the weights no longer match
    (edit / "edit.json").write_text(json.dumps(doc))
    rc, err = cli(capsys, "toyworld", "eval", "--weights", edit / "weights.safetensors", "--n", "4")
    assert rc == 2 and "fails the checksum" in err
