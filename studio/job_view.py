"""A background job on a page: its progress with a Cancel button while it runs (not a page).

    result = job_view.result(L.importance_job(...))   # the result, or None after drawing the
                                                      # job's progress / error / Retry
The progress is a fragment that polls the job every second; when the job ends it reruns the
page, which then finds the result.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import streamlit as st

from dissect.errors import USER_ERRORS
from studio import background as bg


def _wid(job: bg.Job) -> str:
    return hashlib.sha1(repr(job.key).encode()).hexdigest()[:10]


def result(job: bg.Job) -> Any | None:
    """The job's result when it is done; otherwise draw its state and return None."""
    if job.state == "done":
        return job.result
    if job.state == "running":
        _progress(job.key, _wid(job))
        return None
    if job.state == "failed":
        e = job.error
        st.error(f"{job.label}: {e}" if isinstance(e, USER_ERRORS + (ValueError, OSError))
                 else f"{job.label} failed ({type(e).__name__}: {e})")
    else:
        st.info(f"{job.label}: cancelled.")
    if st.button("Try again", key=f"job-retry-{_wid(job)}", icon=":material/refresh:"):
        bg.forget(job.key)
        st.rerun()
    return None


@st.fragment(run_every=1)
def _progress(key, wid: str) -> None:
    job = bg.find(key)
    if job is None or job.state != "running":
        st.rerun()
        return
    c1, c2 = st.columns([6, 1], vertical_alignment="center")
    done = f"{job.done:,} / {job.total:,}" if job.total else "starting"
    c1.progress(job.fraction, text=f"{job.label} · {job.text or 'working'} · {done} · "
                                   f"{time.monotonic() - job.started:.0f} s (runs in the "
                                   "background; other pages stay usable)")
    c2.button("Cancel", key=f"job-cancel-{wid}", icon=":material/stop_circle:",
              on_click=job.cancel)        # a callback: a click is never lost to a poll
