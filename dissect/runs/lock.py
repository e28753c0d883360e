"""One writer per run folder: the lock the CLI and the app share.

    with run_lock("runs/r18"):            # RunLocked (names pid, host, start) when held
        ...write the run...
    holder("runs/r18")                    # {"pid", "host", "started", "cmd"} of a live writer, or None

The lock is an `fcntl.flock` on `<run>/.lock`, so the kernel drops it when its process dies: a
lock file left by a dead process is free and is simply taken over; there is no pid guessing.
The file's JSON only says who holds it, for the refusal message. The app starts a run as a
child process: it takes the lock, passes the descriptor to the child (`child_env`, `pass_fds`),
and the child's `run_lock` adopts it, so there is never a moment when the folder is unlocked.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dissect.errors import RunError

LOCK = ".lock"
ENV_FD = "DISSECT_RUN_LOCK_FD"     # an inherited, already locked descriptor (app -> CLI)


class RunLocked(RunError):
    """Another live process writes this run folder."""


class RunLock:
    """A held lock on one run folder (see `acquire`)."""

    def __init__(self, run_dir: Path, fd: int, created: bool = False):
        self.run_dir, self.path, self.fd = run_dir, run_dir / LOCK, fd
        self.created = created          # this lock made the folder: drop it again if left empty

    def record(self, pid: int | None = None, cmd: list[str] | None = None) -> None:
        """Write who holds the lock (default: this process)."""
        from dissect.runs.atomic import now_iso
        info = {"pid": pid or os.getpid(), "host": socket.gethostname(), "started": now_iso(),
                "cmd": cmd if cmd is not None else sys.argv}
        data = json.dumps(info).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def child_env(self) -> dict[str, str]:
        """Environment for a child that takes the lock over (with Popen(pass_fds=[lock.fd]))."""
        return {ENV_FD: str(self.fd)}

    def detach(self) -> None:
        """Close this process's descriptor, leaving the lock to a child that inherited it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        """Remove the lock file and unlock (the file goes first, so no one locks a dead name)."""
        if self.fd < 0:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        self.detach()
        if self.created:
            _remove_if_empty(self.run_dir)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _remove_if_empty(folder: Path) -> None:
    """Remove `folder` when it holds nothing but empty folders (a run that failed before its
    first durable write leaves no trace in runs/)."""
    try:
        for d, subdirs, files in os.walk(folder, topdown=False):
            if files:
                return
            for sub in subdirs:
                if os.listdir(os.path.join(d, sub)):
                    return
                os.rmdir(os.path.join(d, sub))
        folder.rmdir()
    except OSError:
        pass


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read(path: Path) -> dict:
    from dissect.runs.safe import read_bytes
    try:
        info = json.loads(read_bytes(path, path.parent, limit=1 << 20) or b"{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    """'pid 123 on host h since 2026-...' for a holder's info."""
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since "
            f"{info.get('started', '?')}")


def _inherited(path: Path) -> int | None:
    """The descriptor the app handed us for this very lock file, if any (then forgotten)."""
    text = os.environ.get(ENV_FD)
    if not text or not text.isdigit():
        return None
    fd = int(text)
    if not _same_file(fd, path):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # ours already: same open file
    except OSError:
        return None
    os.environ.pop(ENV_FD, None)
    os.set_inheritable(fd, False)
    return fd


def acquire(run_dir: str | os.PathLike, *, cmd: list[str] | None = None) -> RunLock:
    """Lock `run_dir` for writing (creating the folder); RunLocked naming the holder if taken."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a folder; pass a folder path")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the run folder {run_dir} ({e.strerror}); pass an --out "
                       "in a writable place") from None
    path = run_dir / LOCK
    fd = _inherited(path)
    if fd is not None:
        return RunLock(run_dir, fd)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot write in the run folder {run_dir} ({e.strerror}); pass an "
                           "--out in a writable place") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = _read(path)
            raise RunLocked(f"{run_dir} is being written by another run ({describe(info)}); "
                            "wait for it to finish or stop it, or pass another --out") from None
        if _same_file(fd, path):        # not a file its holder unlinked while we opened it
            lock = RunLock(run_dir, fd, created=created)
            lock.record(cmd=cmd)
            return lock
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | os.PathLike, *, cmd: list[str] | None = None) -> Iterator[RunLock]:
    """`acquire` as a context manager that always releases."""
    lock = acquire(run_dir, cmd=cmd)
    try:
        yield lock
    finally:
        lock.release()


def read_holder(run_dir: str | os.PathLike) -> dict | None:
    """What the lock file says (the holder, or the last one if it is free), or None."""
    return _read(Path(run_dir) / LOCK) or None


def holder(run_dir: str | os.PathLike) -> dict | None:
    """Who writes `run_dir` now ({"pid", "host", "started", "cmd"}), or None when no one does."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(path) or {"pid": None}
    finally:
        os.close(fd)
    return None
