"""Damaged, hostile and odd input to the CLI: one line naming the thing and the fix, a non-zero
exit status, no traceback, and no data lost (issue 10, "the whole class")."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dissect.__main__ import main
from dissect.runs.folder import open_run
from dissect.probes.synthetic_broden import make_synthetic_broden


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile") / "sb"
    make_synthetic_broden(d, n=8, image_size=48, mask_size=24, seed=3)
    return d


@pytest.fixture(scope="module")
def clean(probe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hclean") / "run"
    assert run_cli(probe_dir, out) == 0
    return out


def run_cli(probe, out, *extra, layer="layer3"):
    return main(["run", "--model", "resnet18", "--weights", "none", "--layer", layer,
                 "--probe", f"broden:{probe}", "--batch-size", "4", "--workers", "0", "--quiet",
                 "--out", str(out), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [l for l in err if not l.startswith("note: ")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---- damaged complete runs: detected, named, repaired by the command the message gives
@pytest.mark.parametrize("rel, damage, says", [
    ("layers/layer3/iou.npy", "truncate", "layers/layer3/iou.npy is truncated"),
    ("layers/layer3/imgmax.npy", "delete", "layers/layer3/imgmax.npy is missing"),
    ("layers/layer3/topk.npz", "truncate", "layers/layer3/topk.npz is not a readable .npz"),
    ("layers/layer3/iou.npy", "reshape", "layers/layer3/iou.npy has shape [3, 4]"),
])
def test_damaged_complete_run_is_named_and_repaired(probe_dir, clean, tmp_path, capsys, rel,
                                                   damage, says):
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    f = out / rel
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:150])
    elif damage == "delete":
        f.unlink()
    else:
        np.save(f, np.zeros((3, 4), np.float32))
    assert run_cli(probe_dir, out) == 2
    msg = one_line(capsys)
    assert says in msg and "says complete but is damaged" in msg and "--overwrite" in msg, msg
    assert open_run(out).status == "complete"          # nothing else was touched
    assert run_cli(probe_dir, out, "--overwrite") == 0
    for name in ("iou.npy", "imgmax.npy"):
        np.testing.assert_array_equal(np.load(clean / "layers/layer3" / name),
                                      np.load(out / "layers/layer3" / name))


@pytest.mark.parametrize("rel", ["layers/layer3/units.csv", "concepts.csv"])
def test_export_of_damaged_file_is_one_line(clean, tmp_path, capsys, rel):
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    f = out / rel
    f.write_bytes(b"\x00\xff garbage \x93NUMPY" if rel.endswith((".npz", ".npy")) else b"")
    code = main(["export", str(out), "--format", "netdissect", "--out", str(tmp_path / "t.csv")])
    assert code == 2
    msg = one_line(capsys)
    assert rel in msg and ("cannot be read" in msg or "is damaged" in msg), msg
    assert "--overwrite" in msg


# ---- options out of range: refused before anything is loaded or written
@pytest.mark.parametrize("extra, says", [
    (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
    (["--batch-size", "-3"], "--batch-size -3 must be at least 1"),
    (["--topk", "0"], "--topk 0 must be at least 1"),
    (["--workers", "-1"], "--workers -1 must be at least 0"),
    (["--limit", "0"], "--limit 0 must be at least 1"),
    (["--threads", "-1"], "--threads -1 must be at least 1"),
    (["--iou-threshold", "1.5"], "--iou-threshold 1.5 must be between 0 and 1"),
    (["--iou-threshold", "-0.1"], "--iou-threshold -0.1 must be between 0 and 1"),
    (["--iou-threshold", "nan"], "--iou-threshold nan must be between 0 and 1"),
    (["--quantile", "0"], "--quantile 0.0 must be between 0 and 1"),
    (["--categories", ","], "--categories names no category"),
])
def test_out_of_range_options(probe_dir, tmp_path, capsys, extra, says):
    out = tmp_path / "run"
    assert run_cli(probe_dir, out, *extra) == 2
    assert says in one_line(capsys)
    assert not (out / "run.json").exists()


@pytest.mark.parametrize("layer, says", [
    (",", "--layer names no layer"),
    ("../x", "layer name '../x' is not a module name"),
    ("layer3,..", "layer name '..' is not a module name"),
])
def test_bad_layer_lists(probe_dir, tmp_path, capsys, layer, says):
    assert run_cli(probe_dir, tmp_path / "run", layer=layer) == 2
    assert says in one_line(capsys)


@pytest.mark.parametrize("spec, says", [
    ("broden:", "probe 'broden:' names no folder"),
    ("folder:", "probe 'folder:' names no folder"),
    ("toyworld:abc", "'toyworld:abc' needs a positive whole number"),
    ("toyworld:-3", "needs a positive whole number"),
    ("toyworld:0", "needs a positive whole number"),
    ("toyworld:999999999", "over the limit of"),
    ("nonsense:x", "unknown probe 'nonsense:x'"),
    ("", "unknown probe ''"),
])
def test_malformed_probe_specs(tmp_path, capsys, spec, says):
    code = main(["run", "--model", "resnet18", "--weights", "none", "--layer", "layer3", "--probe", spec, "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert says in one_line(capsys)


def test_out_is_a_file_or_unwritable(probe_dir, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("keep me")
    assert run_cli(probe_dir, f) == 2
    assert "is a file, not a folder" in one_line(capsys)
    assert f.read_text() == "keep me"
    assert run_cli(probe_dir, f / "run") == 2
    assert "cannot create the run folder" in one_line(capsys)
    assert run_cli(probe_dir, Path("/proc/dissect-i10-run")) == 2     # a read-only filesystem
    assert "pass an --out in a writable place" in one_line(capsys)


def test_duplicate_label_ids_name_the_line(probe_dir, tmp_path, capsys):
    d = tmp_path / "sb"
    shutil.copytree(probe_dir, d)
    lines = (d / "label.csv").read_text().splitlines()
    dup = lines[2].split(",")
    dup[0] = lines[1].split(",")[0]
    lines.append(",".join(dup))
    (d / "label.csv").write_text("\n".join(lines) + "\n")
    assert run_cli(d, tmp_path / "run") == 2
    msg = one_line(capsys)
    assert f"line {len(lines)}: label number {dup[0]} repeats line 2" in msg, msg


# ---- garbage tables passed to ablate --run
@pytest.mark.parametrize("content, says", [
    (b"\x00\x01\x02\xff\xfe", "units.csv"),
    (b"a,b\n1,2\n", "has no column unit, category, label, iou"),
    (b"unit,category,label,iou,threshold\nx,object,tree,zz,1\n", "non-numbers in column unit"),
    (b"", "units.csv"),
])
def test_garbage_units_table_to_ablate(clean, tmp_path, capsys, content, says):
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    (run / "layers/layer3/units.csv").write_bytes(content)
    img = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (32, 32)).save(img)
    code = main(["ablate", "--model", "resnet18", "--run", str(run), "--layer", "layer3",
                 "--concept", "tree", "--images", str(img)])
    assert code == 2
    msg = one_line(capsys)
    assert says in msg and str(tmp_path) not in msg.split("run '")[0], msg
