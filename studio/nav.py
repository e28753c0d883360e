"""Page registry, navigation and the sidebar menu of the studio.

    page = navigation()                 # app.py: st.navigation over PAGES (menu hidden) ...
    with through_app():                 # ... then the page runs inside app.py
        menu(); page.run()
    page_link("unit", unit=17)          # st.page_link carrying run/layer (+unit) in the URL
    go("browser")                       # st.switch_page the same way

The menu is ours (st.page_link in the sidebar; `client.showSidebarNavigation = false` hides
Streamlit's own). A folder named pages/ next to the entry script makes a fresh server run a
deep link's page file directly, before app.py ever ran; `ensure_routed()` notices that (the
page is not inside `through_app()`), installs our navigation with the public st.navigation and
hands the request over to app.py with st.switch_page.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import streamlit as st

from studio import warm

ROOT = Path(__file__).resolve().parent.parent
warm.start()        # the heavy imports begin now, in the background (app.py waits with a spinner)

PAGES = {   # key -> (file, title, icon, url path = file stem, so Streamlit's legacy mode resolves
            # it too); the overview is the default page and lives at the root URL
    "overview": ("pages/overview.py", "Layer overview", ":material/dashboard:", "overview"),
    "browser": ("pages/unit_browser.py", "Unit browser", ":material/grid_view:", "unit_browser"),
    "unit": ("pages/unit_detail.py", "Unit detail", ":material/center_focus_strong:", "unit_detail"),
    "image": ("pages/image_viewer.py", "Image viewer", ":material/image_search:", "image_viewer"),
    "compare": ("pages/compare.py", "Compare runs", ":material/compare:", "compare"),
    "ablation": ("pages/ablation_lab.py", "Ablation lab", ":material/science:", "ablation_lab"),
    "directions": ("pages/directions.py", "Directions", ":material/explore:", "directions"),
    "edit": ("pages/edit.py", "Edit", ":material/edit:", "edit"),
    "new": ("pages/new_run.py", "New run", ":material/play_circle:", "new_run"),
    "export": ("pages/export.py", "Export", ":material/download:", "export"),
}
GROUPS = {"Browse": ("overview", "browser", "unit", "image", "compare"),
          "Act": ("ablation", "directions", "edit", "new", "export")}

_inside = threading.local()    # per script thread: is a page running inside app.py now?


def available() -> dict[str, tuple[str, str, str, str]]:
    """PAGES whose file exists (a page lands when its author adds it)."""
    return {k: v for k, v in PAGES.items() if (ROOT / v[0]).exists()}


def _st_pages() -> dict[str, "st.Page"]:
    return {key: st.Page(str(ROOT / file), title=title, icon=icon, url_path=url,
                         default=key == "overview")
            for key, (file, title, icon, url) in available().items()}


def navigation() -> "st.Page":
    """st.navigation over the available pages, its own menu hidden; returns the current page."""
    try:
        st.set_page_config(page_title="Dissection studio", page_icon=":material/neurology:",
                           layout="wide")
    except st.errors.StreamlitAPIException:
        pass
    return st.navigation(list(_st_pages().values()), position="hidden")


@contextmanager
def through_app() -> Iterator[None]:
    """Mark the code inside as running under app.py (see ensure_routed)."""
    _inside.depth = getattr(_inside, "depth", 0) + 1
    try:
        yield
    finally:
        _inside.depth -= 1


def inside_app() -> bool:
    return getattr(_inside, "depth", 0) > 0


def ensure_routed() -> bool:
    """In a page: True when it runs inside app.py. Otherwise (a cold server's first deep link,
    run directly by Streamlit's pages/ folder mode) install our navigation and rerun the same
    page and query through app.py; under AppTest, which cannot follow that, return False so
    the caller draws the sidebar itself."""
    if inside_app():
        return True
    pages = _st_pages()
    st.navigation(list(pages.values()), position="hidden")
    here = _calling_page()
    if here and _served():
        st.switch_page(pages[here], query_params=st.query_params.to_dict())
    return False


def _served() -> bool:
    """False under streamlit.testing's AppTest, which runs switched-to pages directly."""
    return "streamlit.testing.v1.app_test" not in sys.modules


def _calling_page() -> str:
    """Key in PAGES of the page script that is running now ("" when none)."""
    import inspect
    files = {str((ROOT / file).resolve()): key for key, (file, *_) in available().items()}
    for frame in inspect.stack():
        key = files.get(str(Path(frame.filename).resolve()))
        if key:
            return key
    return ""


def _params(**params: object) -> dict[str, str]:
    qp = {"run": st.session_state.get("run"), "layer": st.session_state.get("layer")}
    qp.update(params)
    return {k: str(v) for k, v in qp.items() if v is not None}


def menu(where=None) -> None:
    """Our menu, grouped, each link carrying the current run and layer; drawn into `where`
    (a container made earlier, so it can sit above the pickers) or the sidebar."""
    pages = available()
    with where if where is not None else st.sidebar:
        for group, keys in GROUPS.items():
            keys = [k for k in keys if k in pages]
            if not keys:
                continue
            st.caption(group)
            for key in keys:
                page_link(key)


def page_link(key: str, label: str | None = None, **params: object) -> None:
    """st.page_link to one of PAGES, carrying run/layer and `params` in the URL."""
    if key not in available():
        return
    file, title, icon, _ = PAGES[key]
    st.page_link(str(ROOT / file), label=label or title, icon=icon,
                 query_params=_params(**params))


def go(key: str, **params: object) -> None:
    """Switch to one of PAGES with run/layer and `params` in the URL."""
    for k in ("unit", "image"):
        if k in params:
            st.session_state[k] = int(params[k])
    st.switch_page(str(ROOT / PAGES[key][0]), query_params=_params(**params))
