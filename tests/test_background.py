"""studio.background: long work in the server is a cancellable, shared background job."""
import threading
import time

import pytest

from studio import background as bg


def _slow(steps: int, calls: list | None = None):
    def work(job):
        if calls is not None:
            calls.append(1)
        for i in range(steps):
            job.step(i, steps, "counting")
            time.sleep(0.01)
        return steps
    return work


def test_a_job_is_shared_by_key_and_runs_once():
    calls = []
    key = ("test", "shared", time.monotonic())
    a = bg.submit(key, _slow(20, calls), "count")
    b = bg.submit(key, _slow(20, calls), "count")
    assert a is b and a.wait(10)
    assert a.state == "done" and a.result == 20 and calls == [1]
    assert bg.submit(key, _slow(20, calls), "count") is a and calls == [1]   # done: reused


def test_cancel_stops_the_work_at_its_next_step():
    key = ("test", "cancel", time.monotonic())
    job = bg.submit(key, _slow(100_000), "long")       # ~17 min if nobody stops it
    while job.done < 3:
        time.sleep(0.01)
    t = time.monotonic()
    job.cancel()
    assert job.wait(5) and time.monotonic() - t < 1
    assert job.state == "cancelled" and job.result is None and not job.thread.is_alive()
    assert job.done < 1000
    assert bg.submit(key, _slow(3), "short") is job      # kept (shown) until forgotten
    bg.forget(key)
    again = bg.submit(key, _slow(3), "short")            # "Try again": a new job
    assert again is not job and again.wait(5) and again.result == 3


def test_a_failure_is_kept_with_its_error_and_replaced_on_retry():
    key = ("test", "fail", time.monotonic())

    def broken(job):
        raise ValueError("the set folder is empty")
    job = bg.submit(key, broken, "broken")
    assert job.wait(5) and job.state == "failed"
    assert isinstance(job.error, ValueError) and "empty" in str(job.error)
    assert bg.submit(key, _slow(2), "fixed") is job      # the error stays on the page
    bg.forget(key)
    assert bg.submit(key, _slow(2), "fixed").wait(5)
    assert bg.find(key).state == "done"


def test_jobs_are_daemon_threads_and_cancel_all_stops_them():
    keys = [("test", "all", i, time.monotonic()) for i in range(3)]
    jobs = [bg.submit(k, _slow(100_000), "long") for k in keys]
    assert all(j.thread.daemon for j in jobs)       # a stopping server never waits for them
    assert bg.cancel_all() >= 3
    assert all(j.wait(5) and j.state == "cancelled" for j in jobs)


def test_finished_jobs_are_bounded():
    for i in range(bg.KEEP + 5):
        bg.submit(("test", "keep", i), _slow(1), "tiny").wait(5)
    with bg._LOCK:
        assert len(bg._JOBS) <= bg.KEEP + len([j for j in bg._JOBS.values()
                                               if j.state == "running"])
    assert bg.find(("test", "keep", 0)) is None and bg.find(("test", "keep", bg.KEEP + 4))


def test_cancelling_a_toyworld_build_stops_it_and_leaves_no_world(tmp_path, monkeypatch):
    """A real world build (2 worker processes) stops within seconds of Cancel, and no
    half-built world is left to be mistaken for a complete one."""
    from dissect.interventions.labelled import open_labelled_set
    from dissect.models.registry import load_model
    from dissect.toyworld import world_dir
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path))
    lm = load_model("toyworld", "default")
    started = threading.Event()

    def work(job):
        def tell(done, total):
            started.set()
            job.step(done, total, "building")
        return open_labelled_set("toyworld:5000", lm, max_images=5000, progress=tell)
    job = bg.submit(("test", "world", str(tmp_path)), work, "world")
    assert started.wait(120)
    t = time.monotonic()
    job.cancel()
    assert job.wait(30), "the world build did not stop"
    assert time.monotonic() - t < 4 and job.state == "cancelled"
    assert not world_dir(5000, 0).exists()
    assert not any(p.name.startswith(".") for p in world_dir(5000, 0).parent.glob("*")), \
        "the build's temporary folder was left behind"


def test_rank_units_reports_progress_and_stops_when_told():
    """rank_units' per-unit replays (the generic path) can be stopped between units."""
    from dissect.interventions.importance import rank_units
    from dissect.interventions.labelled import open_labelled_set
    from dissect.models.registry import load_model
    lm = load_model("toyworld", "default")
    lset = open_labelled_set("toyworld:40", lm)
    seen = []

    def tell(done, total):
        seen.append((done, total))
        if len(seen) > 5:
            raise bg.Cancelled("stop")
    with pytest.raises(bg.Cancelled):
        rank_units(lm, lset, "conv6", force_generic=True, progress=tell)
    assert len(seen) == 6 and all(d <= t for d, t in seen)
