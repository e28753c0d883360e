"""Severe hardening cases (issue 10): a resumed run never trusts checkpoints that do not fit
the cache files on disk, never unpickles code, and one lock guards a run folder."""
from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dissect.__main__ import main
from dissect.runs.folder import open_run
from dissect.probes.synthetic_broden import make_synthetic_broden

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard") / "sb"
    make_synthetic_broden(d, n=8, image_size=48, mask_size=24, seed=3)
    return d


@pytest.fixture(scope="module")
def clean(probe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    assert run_cli(probe_dir, out) == 0
    return out


def run_cli(probe, out, *extra):
    return main(["run", "--model", "resnet18", "--weights", "none", "--layer", "layer3",
                 "--probe", f"broden:{probe}", "--batch-size", "4", "--workers", "0", "--quiet",
                 "--out", str(out), *extra])


def failed_in_phase2(probe_dir, tmp_path):
    """A run whose phase 1 finished (phase1.pt written) and whose phase 2 failed."""
    probe = tmp_path / "sb"
    shutil.copytree(probe_dir, probe)
    mask = probe / "images" / "img00005_color.png"
    saved = mask.read_bytes()
    mask.unlink()
    out = tmp_path / "run"
    assert run_cli(probe, out) == 2
    assert open_run(out).status == "failed"
    assert (out / "cache" / "phase1.pt").exists()
    mask.write_bytes(saved)
    return probe, out


def same_results(a, b):
    ra, rb = open_run(a), open_run(b)
    assert rb.complete
    np.testing.assert_array_equal(ra.imgmax("layer3"), rb.imgmax("layer3"))
    np.testing.assert_array_equal(ra.iou("layer3"), rb.iou("layer3"))
    np.testing.assert_array_equal(ra.topk("layer3")["maps"], rb.topk("layer3")["maps"])
    assert np.abs(rb.imgmax("layer3")).sum() > 0


def test_deleted_cache_file_reruns_the_phase_not_zeros(probe_dir, clean, tmp_path, capsys):
    probe, out = failed_in_phase2(probe_dir, tmp_path)
    (out / "cache" / "layer3.acts.npy").unlink()       # "free space": delete the biggest file
    assert run_cli(probe, out) == 0
    same_results(clean, out)


def test_truncated_cache_file_reruns_the_phase(probe_dir, clean, tmp_path):
    probe, out = failed_in_phase2(probe_dir, tmp_path)
    f = out / "cache" / "layer3.imgmax.npy"
    f.write_bytes(f.read_bytes()[:200])
    assert run_cli(probe, out) == 0
    same_results(clean, out)


def test_resume_after_phase2_failure_is_exact(probe_dir, clean, tmp_path, monkeypatch, capsys):
    probe, out = failed_in_phase2(probe_dir, tmp_path)
    from dissect.engine import dissection

    def no_forward(*a, **k):
        raise AssertionError("phase 1 ran again although its checkpoint fits")
    monkeypatch.setattr(dissection, "phase1", no_forward)
    assert run_cli(probe, out) == 0
    assert "cannot be used" not in capsys.readouterr().err
    same_results(clean, out)


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_checkpoint_is_not_unpickled(probe_dir, clean, tmp_path, monkeypatch, capsys):
    probe, out = failed_in_phase2(probe_dir, tmp_path)
    monkeypatch.chdir(tmp_path)
    with open(out / "cache" / "phase1.pt", "wb") as f:
        pickle.dump({"identity": "x", "done": 8, "layers": _Boom()}, f)
    assert run_cli(probe, out) == 0
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    assert "phase1.pt cannot be used" in capsys.readouterr().err
    same_results(clean, out)


HOLD = """
import sys, time
from dissect.runs.lock import acquire
lock = acquire(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def _hold(run_dir):
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_is_refused_and_finished_run_is_untouched(probe_dir, clean, tmp_path,
                                                                 capsys):
    import socket
    from dissect.runs.lock import holder
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    p = _hold(out)
    try:
        assert holder(out)["pid"] == p.pid
        assert run_cli(probe_dir, out, "--overwrite") == 2
        err = capsys.readouterr().err
        assert f"pid {p.pid} on host {socket.gethostname()} since 20" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    finally:
        p.kill()
        p.wait()
    after = {q.relative_to(out): q.read_bytes() for q in out.rglob("*") if q.is_file()}
    after.pop(Path(".lock"), None)
    assert after == before                 # nothing written, status still complete
    assert open_run(out).status == "complete"
    # the killed holder left its lock file: it is stale and taken over
    assert (out / ".lock").exists() and holder(out) is None
    assert run_cli(probe_dir, out) == 0
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("damage, key", [
    ([1, 2, 3], "the file must be a JSON object"),
    ({"counts": None}, "key 'counts' must be a JSON object"),
    ({"config": {"layers": "conv6"}}, "key 'config.layers' must be a list of strs"),
    ({"config": {"layers": ["../../etc"]}}, "layer name '../../etc'"),
    ({"status": 7}, "key 'status' must be a string"),
    ({"config": None}, "key 'config' must be a JSON object"),
])
def test_wrong_shape_run_json_is_damaged_not_a_crash(clean, tmp_path, damage, key, capsys):
    import json
    from dissect.runs.folder import list_runs
    root = tmp_path / "runs"
    good, bad = root / "good", root / "bad"
    shutil.copytree(clean, good)
    shutil.copytree(clean, bad)
    info = json.loads((bad / "run.json").read_text())
    if isinstance(damage, dict):
        for k, v in damage.items():
            if isinstance(v, dict):
                info[k].update(v)
            else:
                info[k] = v
    else:
        info = damage
    (bad / "run.json").write_text(json.dumps(info))
    with pytest.raises(Exception) as e:
        open_run(bad)
    assert type(e.value).__name__ == "RunError" and key in str(e.value), str(e.value)
    runs = {r.name: r for r in list_runs(root)}
    assert runs["good"].status == "complete"
    assert runs["bad"].status == "damaged" and key in runs["bad"].damage
    assert main(["export", str(bad), "--format", "csv", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_ablate_never_imports_a_model_file_named_by_the_run(clean, tmp_path, capsys):
    import json
    evil = tmp_path / "evil.py"
    marker = tmp_path / "IMPORTED"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\ndef build():\n    raise SystemExit\n")
    run = tmp_path / "sent"
    shutil.copytree(clean, run)
    info = json.loads((run / "run.json").read_text())
    info["config"]["model"] = f"{evil}:build"
    (run / "run.json").write_text(json.dumps(info))
    code = main(["ablate", "--run", str(run), "--layer", "layer3", "--units", "1",
                 "--images", str(evil)])
    assert code == 2 and not marker.exists()
    err = capsys.readouterr().err
    assert "never chooses code" in err and f"--model {evil}:build" in err and "Traceback" not in err


def test_server_binds_localhost_by_default():
    import tomllib
    cfg = tomllib.loads((Path(__file__).parent.parent / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["server"]["maxUploadSize"] <= 25          # MB; Streamlit's default is 200


ADOPT = """
import sys, time
from dissect.runs.lock import acquire
lock = acquire(sys.argv[1])          # must adopt the app's lock, not be refused by it
print("adopted", flush=True)
time.sleep(120)
"""


def test_app_start_hands_its_lock_to_the_child_and_the_cli_is_refused(probe_dir, tmp_path,
                                                                     capsys):
    import time

    from studio import jobs
    out = tmp_path / "fromapp"
    pid = jobs.start(out, [sys.executable, "-c", ADOPT, str(out)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while "adopted" not in (out / "log.txt").read_text() and time.monotonic() < deadline:
            assert jobs.running_pid(out) == pid, jobs.log_tail(out)
            time.sleep(0.2)
        assert "adopted" in (out / "log.txt").read_text(), jobs.log_tail(out)
        assert jobs.running_pid(out) == pid
        assert run_cli(probe_dir, out) == 2
        assert f"pid {pid} on host" in capsys.readouterr().err
        with pytest.raises(jobs.AlreadyRunning, match=f"pid {pid}"):
            jobs.start(out, [sys.executable, "-c", "pass"])
    finally:
        assert jobs.cancel(out)
    assert jobs.running_pid(out) is None
    assert not (out / "run.json").exists()     # the refused CLI run wrote nothing


@pytest.fixture(params=["96k", "240k", "400k"])      # full at run.json, a checkpoint, iou.npy
def small_disk(tmp_path, request):
    """A real, tiny filesystem (tmpfs) that can be grown: (mount point, grow(size))."""
    import subprocess
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (a real full disk cannot be made here)")

    def grow(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)
    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_disk_fails_cleanly_twice_then_resumes_when_grown(probe_dir, clean,
                                                                    small_disk, capsys):
    """On a real full filesystem the run fails with a message naming the file (no SIGBUS, not
    marked complete), a re-run on the still-full disk fails the same way, and after the disk is
    grown the same command completes with results identical to a run that never failed."""
    import subprocess
    mnt, grow = small_disk
    out = mnt / "run"
    cmd = [sys.executable, "-m", "dissect", "run", "--model", "resnet18", "--weights", "none",
           "--layer", "layer3", "--probe", f"broden:{probe_dir}", "--batch-size", "4",
           "--workers", "0", "--quiet", "--out", str(out)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 3, (attempt, p.returncode, p.stderr[-2000:])   # 135 is SIGBUS
        assert f"the disk is full while writing {out}" in p.stderr, p.stderr
        assert "free space and run the same command again" in p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert not (out / "run.json").exists() or open_run(out).status != "complete"
    grow("64m")
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    same_results(clean, out)
