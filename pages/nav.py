"""Page registry and navigation of the studio (not a page).

    page = navigation()            # app.py: st.navigation over PAGES, then page.run()
    page_link("unit", unit=17)     # st.page_link carrying run/layer (+unit) in the URL
    go("browser")                  # st.switch_page the same way

Streamlit treats a folder named pages/ next to the entry script as a legacy multipage app
until st.navigation runs once; `reroute_legacy()` makes a fresh server's first deep link land
on the right page through our menu.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

PAGES = {   # key -> (file, title, icon, url path = file stem, so legacy mode resolves it too;
            # the overview is the default page and lives at the root URL)
    "overview": ("pages/overview.py", "Layer overview", ":material/dashboard:", "overview"),
    "browser": ("pages/unit_browser.py", "Unit browser", ":material/grid_view:", "unit_browser"),
    "unit": ("pages/unit_detail.py", "Unit detail", ":material/center_focus_strong:", "unit_detail"),
    "image": ("pages/image_viewer.py", "Image viewer", ":material/image_search:", "image_viewer"),
    "ablation": ("pages/ablation_lab.py", "Ablation lab", ":material/science:", "ablation_lab"),
    "new": ("pages/new_run.py", "New run", ":material/play_circle:", "new_run"),
    "export": ("pages/export.py", "Export", ":material/download:", "export"),
}


def _pages() -> dict[str, "st.Page"]:
    """file name -> st.Page for every page in PAGES whose file exists."""
    root = Path(__file__).resolve().parent.parent
    return {Path(file).name: st.Page(str(root / file), title=title, icon=icon, url_path=url,
                                     default=key == "overview")
            for key, (file, title, icon, url) in PAGES.items() if (root / file).exists()}


def navigation():
    """st.navigation over PAGES (files that exist), grouped; returns the current st.Page."""
    try:
        st.set_page_config(page_title="Dissection studio", page_icon=":material/neurology:",
                           layout="wide")
    except st.errors.StreamlitAPIException:
        pass
    pages = _pages()    # a missing file (e.g. the ablation lab before its author adds it) is skipped
    groups: dict[str, list] = {"Browse": [], "Act": []}
    for key, (file, *_rest) in PAGES.items():
        if Path(file).name in pages:
            group = "Browse" if key in ("overview", "browser", "unit", "image") else "Act"
            groups[group].append(pages[Path(file).name])
    return st.navigation(groups)


def _use_navigation() -> bool:
    """Turn off Streamlit's legacy pages/-folder mode (our pages/ is for st.navigation).

    A fresh server whose first request is a deep link (/unit?...) runs the page file directly
    with an automatic menu of every file in pages/. Returns True when that happened, so the
    caller can rerun through app.py.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:   # pragma: no cover - other Streamlit versions
        return False
    legacy = bool(PagesManager.uses_pages_directory)
    PagesManager.uses_pages_directory = False
    return legacy


def reroute_legacy() -> None:
    """Run without app.py: install our menu; under legacy mode rerun this page through it."""
    legacy = _use_navigation()
    navigation()
    if legacy and _served() and not st.session_state.get("_legacy_switched"):
        pages, here = _pages(), _calling_page()
        if here in pages:
            st.session_state["_legacy_switched"] = True
            st.switch_page(pages[here], query_params=st.query_params.to_dict())


def _served() -> bool:
    """False under streamlit.testing's AppTest, which runs switched-to pages directly and loses
    widget events when a page reroutes itself; True under a real server."""
    return "streamlit.testing.v1.app_test" not in sys.modules


def _calling_page() -> str:
    """File name of the page script (one of PAGES) that is running now ("" when none)."""
    import inspect
    here = Path(__file__).resolve().parent
    names = {Path(file).name for file, *_ in PAGES.values()}
    for frame in inspect.stack():
        p = Path(frame.filename).resolve()
        if p.parent == here and p.name in names:
            return p.name
    return ""


def page_link(key: str, label: str | None = None, **params: object) -> None:
    """st.page_link to one of PAGES, carrying run/layer and `params` in the URL."""
    file, title, icon, _ = PAGES[key]
    if not (Path(__file__).resolve().parent.parent / file).exists():
        return
    qp = {"run": st.session_state.get("run"), "layer": st.session_state.get("layer")}
    qp.update(params)
    st.page_link(file, label=label or title, icon=icon,
                 query_params={k: str(v) for k, v in qp.items() if v is not None})


def go(key: str, **params: object) -> None:
    """Switch to one of PAGES with run/layer and `params` in the URL."""
    for k in ("unit", "image"):
        if k in params:
            st.session_state[k] = int(params[k])
    qp = {"run": st.session_state.get("run"), "layer": st.session_state.get("layer")}
    qp.update(params)
    st.switch_page(PAGES[key][0], query_params={k: str(v) for k, v in qp.items()
                                                 if v is not None})
