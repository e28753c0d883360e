"""The studio's heavy imports, started in a background thread as soon as the server starts.

    warm.start()                 # idempotent; `python -m dissect_studio` calls it at server start,
                                 # studio.nav at its import (plain `streamlit run app.py`)
    if not warm.ready():         # app.py: a cold server shows its frame and a spinner at once ...
        warm.wait()              # ... while pandas, plotly and the run readers finish importing

A fresh server otherwise spends the first request's 5–9 s (on a loaded 2-core machine) importing
pandas, plotly, pyarrow and the run readers before a page draws anything: a blank page. Python's
per-module import locks make a page that imports one of these while the thread is at it simply
wait for the same import, never import twice. torch comes last and is not waited for: only the
lab, the unit page's losses and Directions need it, and they say so with their own spinners.
"""
from __future__ import annotations

import importlib
import threading

LIGHT = ("numpy", "pandas", "pyarrow", "plotly.express", "plotly.graph_objects", "PIL.Image",
         "dissect.runs.folder", "dissect.runs.render", "dissect.runs.schema",
         "dissect.trust.columns")
HEAVY = ("torch", "torchvision")

_light_done = threading.Event()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _work(light: tuple[str, ...], heavy: tuple[str, ...]) -> None:
    for name in light:
        _quiet_import(name)
    _light_done.set()
    for name in heavy:
        _quiet_import(name)


def _quiet_import(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception:   # noqa: BLE001 (a missing optional module shows up where it is used)
        pass


def start(light: tuple[str, ...] = LIGHT, heavy: tuple[str, ...] = HEAVY) -> threading.Thread:
    """Start importing `light`, then `heavy`, in a daemon thread (once per process)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_work, args=(light, heavy), daemon=True,
                                       name="studio-warm-imports")
            _thread.start()
        return _thread


def ready() -> bool:
    """True once the light imports are done (or when no warm-up was started)."""
    return _thread is None or _light_done.is_set()


def wait(timeout: float = 60.0) -> bool:
    """Block until the light imports are done; False when `timeout` s passed first."""
    return True if _thread is None else _light_done.wait(timeout)
