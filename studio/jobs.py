"""Background dissection runs started from the app (no Streamlit here; not a page).

    cmd = run_command(model="resnet18", weights="none", layers=["layer4"],
                      probe="toyworld:200", out=root / "r18")
    pid = start(root / "r18", cmd)      # AlreadyRunning when another session started it
    running_pid(root / "r18")           # the live pid from <run>/.lock, or None
    cancel(root / "r18")                # SIGTERM to the process group; run.json -> cancelled

`<run>/.lock` is dissect.runs.lock's flock, the one `python -m dissect run` takes too: two browser
sessions pressing Start, or a shell and the app, never write one folder at once. The app takes
the lock and hands it to the child process; the kernel frees it when that process exits.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from dissect.runs.atomic import now_iso, write_json
from dissect.runs.schema import read_info

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
    """Who holds (or last held) the run's lock: {"pid", "host", "started", "cmd"}, or None."""
    from dissect.runs.lock import read_holder
    return read_holder(run_dir)


def _reap() -> None:
    for pid, proc in list(_PROCS.items()):
        if proc.poll() is not None:
            _PROCS.pop(pid, None)


def running_pid(run_dir: Path) -> int | None:
    """pid of the live process that holds this run's lock (the CLI's lock too), else None."""
    from dissect.runs.lock import holder
    _reap()
    info = holder(run_dir)
    return info.get("pid") if info and isinstance(info.get("pid"), int) else None


def start(run_dir: Path, cmd: list[str], cwd: Path | None = None,
          env: dict[str, str] | None = None) -> int:
    """Start `cmd` in its own session with output in <run>/log.txt; return its pid.

    The run folder's lock (dissect.runs.lock, shared with the CLI) is taken here and handed to the
    child, so a second Start, or a `dissect run` on the same folder, is refused while it runs."""
    from dissect.runs.lock import RunLocked, acquire
    run_dir = Path(run_dir)
    try:
        lock = acquire(run_dir, cmd=cmd)
    except RunLocked as e:
        raise AlreadyRunning(str(e).replace(str(run_dir), run_dir.name, 1)) from None
    try:
        with open(run_dir / LOG, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    pass_fds=(lock.fd,),
                                    env={**os.environ, **(env or {}), **lock.child_env()})
        _PROCS[proc.pid] = proc
        lock.record(pid=proc.pid, cmd=cmd)
        lock.detach()                # the child holds it now, until it exits
        return proc.pid
    except BaseException:
        lock.release()
        raise


def cancel(run_dir: Path, wait: float = 5.0) -> bool:
    """SIGTERM the lock holder's process group; mark run.json cancelled if it still says
    running (only the holder's run: a refused duplicate never touches a finished run)."""
    run_dir = Path(run_dir)
    pid = running_pid(run_dir)
    if pid is None:
        return False
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and running_pid(run_dir) == pid:
        time.sleep(0.1)
    if running_pid(run_dir) == pid:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and running_pid(run_dir) == pid:
            time.sleep(0.1)
    _reap()
    try:
        info = read_info(run_dir)
        if info.get("status") == "running" and running_pid(run_dir) is None:
            info.update(status="cancelled", error="cancelled from the app", updated=now_iso())
            write_json(run_dir / "run.json", info)
    except ValueError:
        pass   # no run.json yet (cancelled before the engine wrote one), or damaged
    return True


def log_tail(run_dir: Path, lines: int = 15) -> str:
    """The last lines of the run's log (progress bars collapsed to their last state)."""
    from dissect.runs.safe import check_file
    path = Path(run_dir) / LOG
    try:
        check_file(path, run_dir)          # never a FIFO, a device or a link out of the folder
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 20000))
            data = f.read(20000).decode(errors="replace")
    except (OSError, ValueError):
        return ""
    data = "\n".join(part.split("\r")[-1] for part in data.split("\n"))
    return "\n".join(data.strip().splitlines()[-lines:])


def jobs(root: Path) -> list[Path]:
    """Run folders under `root` that have a lock file (running or just finished)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / LOCK).exists())
