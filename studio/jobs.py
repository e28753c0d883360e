"""Background dissection runs started from the app (no Streamlit here; not a page).

    cmd = run_command(model="resnet18", weights="none", layers=["layer4"],
                      probe="toyworld:200", out=root / "r18")
    pid = start(root / "r18", cmd)      # AlreadyRunning when another session started it
    running_pid(root / "r18")           # the live pid from <run>/.lock, or None
    cancel(root / "r18")                # SIGTERM to the process group; run.json -> cancelled

`<run>/.lock` holds {"pid", "create_time", "cmd", "started"}; it is created with O_EXCL, so
two browser sessions pressing Start at once never launch the same run twice. A lock whose
process is gone (or a zombie, or a reused pid) is stale and replaced.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from dissect.runs import now_iso, read_info, write_json

LOCK = ".lock"
LOG = "log.txt"
_PROCS: dict[int, subprocess.Popen] = {}   # children of this process, reaped on poll


class AlreadyRunning(RuntimeError):
    """The run folder's lock names a live process."""


RAY_OK = re.compile(r"^(local(:[1-9][0-9]{0,3})?|auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5})$")


def run_command(*, model: str, weights: str, layers: list[str], probe: str, out: Path,
                segmenter: str | None = None, quantile: float | None = None,
                batch_size: int | None = None, device: str | None = None,
                seed: int | None = None, ray: str | None = None) -> list[str]:
    """The `python -m dissect run ...` argv for these choices (`ray`: --ray local:N | ADDRESS)."""
    cmd = [sys.executable, "-m", "dissect", "run", "--model", model, "--weights", weights,
           "--layer", ",".join(layers), "--probe", probe]
    if segmenter:
        cmd += ["--segmenter", segmenter]
    for flag, v in (("--quantile", quantile), ("--batch-size", batch_size),
                    ("--device", device), ("--seed", seed), ("--ray", ray)):
        if v is not None:
            cmd += [flag, str(v)]
    return cmd + ["--out", str(out)]


def shard_lines(info: dict) -> list[dict]:
    """One {"fraction", "text"} per Ray shard of a run.json (as `run --ray` records them)."""
    lines = []
    for r in info.get("shards") or []:
        total = max(1, int(r.get("total") or 1))
        done = min(total, int(r.get("done") or 0))
        lo, hi = (r.get("images") or ["?", "?"])[:2]
        state = "done" if r.get("finished") else f"{done} / {total}"
        extra = f" · attempt {r['attempts']}" if int(r.get("attempts") or 0) > 1 else ""
        node = f" · {r['node']}" if r.get("node") else ""
        lines.append({"fraction": done / total,
                      "text": f"shard {r.get('shard')} (images {lo}–{hi}) · {r.get('phase')}: "
                              f"{state}{node}{extra}"})
    return lines


def read_lock(run_dir: Path) -> dict | None:
    """The lock's content, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / LOCK).read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int, create_time: float | None) -> bool:
    proc = _PROCS.get(pid)
    if proc is not None and proc.poll() is not None:
        _PROCS.pop(pid, None)
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(p.create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def running_pid(run_dir: Path) -> int | None:
    """pid of the live process that holds this run's lock, else None."""
    lock = read_lock(run_dir)
    if not lock or not isinstance(lock.get("pid"), int):
        return None
    return lock["pid"] if _alive(lock["pid"], lock.get("create_time")) else None


def _claim(run_dir: Path) -> int:
    """Create the lock file exclusively; replaces a stale one; AlreadyRunning otherwise."""
    path = Path(run_dir) / LOCK
    for _ in range(2):
        try:
            return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            lock = read_lock(run_dir)
            if lock is None:   # being written by another session right now
                time.sleep(0.2)
                lock = read_lock(run_dir)
            if lock is None or running_pid(run_dir) is not None:
                raise AlreadyRunning(f"{run_dir.name} is already running "
                                     f"(pid {lock.get('pid') if lock else '?'})") from None
            path.unlink(missing_ok=True)   # stale
    raise AlreadyRunning(f"{run_dir.name} is being started by another session")


def start(run_dir: Path, cmd: list[str], cwd: Path | None = None,
          env: dict[str, str] | None = None) -> int:
    """Start `cmd` in its own session with output in <run>/log.txt; return its pid."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _claim(run_dir)
    try:
        log = open(run_dir / LOG, "ab")
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
        log.close()
        _PROCS[proc.pid] = proc
        try:
            ctime = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            ctime = None
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": proc.pid, "create_time": ctime, "cmd": cmd,
                       "started": now_iso()}, f)
        return proc.pid
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        (run_dir / LOCK).unlink(missing_ok=True)
        raise


def cancel(run_dir: Path, wait: float = 5.0) -> bool:
    """SIGTERM the run's process group; mark run.json cancelled if it still says running."""
    run_dir = Path(run_dir)
    pid = running_pid(run_dir)
    if pid is None:
        return False
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _alive(pid, None):
        time.sleep(0.1)
    if _alive(pid, None):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _PROCS.pop(pid, None)
    try:
        info = read_info(run_dir)
        if info.get("status") == "running":
            info.update(status="cancelled", error="cancelled from the app", updated=now_iso())
            write_json(run_dir / "run.json", info)
    except ValueError:
        pass   # no run.json yet (cancelled before the engine wrote one)
    (run_dir / LOCK).unlink(missing_ok=True)
    return True


def log_tail(run_dir: Path, lines: int = 15) -> str:
    """The last lines of the run's log (progress bars collapsed to their last state)."""
    try:
        data = (Path(run_dir) / LOG).read_bytes()[-20000:].decode(errors="replace")
    except OSError:
        return ""
    data = "\n".join(part.split("\r")[-1] for part in data.split("\n"))
    return "\n".join(data.strip().splitlines()[-lines:])


def jobs(root: Path) -> list[Path]:
    """Run folders under `root` that have a lock file (running or just finished)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / LOCK).exists())
