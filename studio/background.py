"""Long work inside the server as cancellable background jobs, shared by every session.

    job = submit(("importance", *key), lambda job: rank(job), label="Ranking every unit")
    job.step(3, 10, "batch 3 of 10")     # inside the work: progress; raises Cancelled once
                                         # someone pressed Cancel (or the server is stopping)
    job = find(key)                      # the job of this key (running, done, failed), or None
    forget(key)                          # drop it (cancelled if running): the next submit reruns
    job.state, job.result, job.error     # "running" | "done" | "failed" | "cancelled"
    job.cancel()                         # sets the flag; the work stops at its next step()

The work runs in a daemon thread, so a page run never waits on it; a stopping process cancels
its jobs and waits at most 5 s for them (atexit). Finished jobs are kept (the newest `KEEP`) so their results are shared,
like st.cache_resource. No Streamlit here: studio/job_view.py draws a job.
"""
from __future__ import annotations

import atexit
import threading
import time
from typing import Any, Callable, Hashable

KEEP = 16          # finished jobs kept for their results (the oldest goes first)


class Cancelled(Exception):
    """Raised by Job.step() inside the work once the job was cancelled."""


class Job:
    """One piece of work in a thread: its progress, state, result or error."""

    def __init__(self, key: Hashable, label: str):
        self.key, self.label = key, label
        self.state = "running"
        self.done = self.total = 0
        self.text = ""
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self._cancel = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def step(self, done: int, total: int, text: str = "") -> None:
        """Record progress; raise Cancelled when the job was cancelled."""
        self.done, self.total = int(done), int(total)
        if text:
            self.text = text
        if self._cancel.is_set():
            raise Cancelled(self.label)

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work ended (tests and scripts); True when it did."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.state != "running"

    def _run(self, work: Callable[["Job"], Any]) -> None:
        try:
            self.result = work(self)
            self.state = "done"
        except Cancelled:
            self.state = "cancelled"
        except BaseException as e:      # shown to the user by the page; never lost silently
            self.error, self.state = e, "failed"
        finally:
            self.finished = time.monotonic()


_JOBS: dict[Hashable, Job] = {}
_LOCK = threading.Lock()


def find(key: Hashable) -> Job | None:
    """The job of this key, or None."""
    with _LOCK:
        return _JOBS.get(key)


def submit(key: Hashable, work: Callable[[Job], Any], label: str) -> Job:
    """The job of `key` (running, done, failed or cancelled), else a new one running
    `work(job)` in a thread. To run a failed or cancelled job again, forget() it first."""
    with _LOCK:
        job = _JOBS.get(key)
        if job is not None:
            return job
        job = Job(key, label)
        _JOBS[key] = job
        _trim()
        job.thread = threading.Thread(target=job._run, args=(work,), daemon=True,
                                      name=f"studio-job {label}")
        job.thread.start()
        return job


def forget(key: Hashable) -> None:
    """Drop a job (cancelling it when it still runs)."""
    with _LOCK:
        job = _JOBS.pop(key, None)
    if job is not None:
        job.cancel()


def cancel_all() -> int:
    """Cancel every running job (a stopping server); the number cancelled."""
    with _LOCK:
        running = [j for j in _JOBS.values() if j.state == "running"]
    for j in running:
        j.cancel()
    return len(running)


@atexit.register
def _stop_at_exit(grace: float = 5.0) -> None:
    """A stopping process (the server after SIGTERM, a test run) cancels its jobs and gives them
    `grace` seconds to reach their next step, so none is killed inside torch."""
    cancel_all()
    deadline = time.monotonic() + grace
    for job in running():
        job.wait(max(0.0, deadline - time.monotonic()))


def running() -> list[Job]:
    with _LOCK:
        return [j for j in _JOBS.values() if j.state == "running"]


def _trim() -> None:
    ended = [k for k, j in _JOBS.items() if j.state != "running"]
    while len(_JOBS) > KEEP and ended:
        _JOBS.pop(ended.pop(0), None)
