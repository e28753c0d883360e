"""The dissection studio: `streamlit run app.py` (runs from $DISSECT_RUNS, default runs/).

Pages live in pages/ and are registered here with st.navigation; the sidebar's run and layer
pickers (pages/common.py) are shared by every page and mirrored in the URL.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pages import common  # noqa: E402

st.set_page_config(page_title="Dissection studio", page_icon=":material/neurology:",
                   layout="wide")

groups: dict[str, list] = {"Browse": [], "Act": []}
for key, (file, title, icon, url) in common.PAGES.items():
    if not (ROOT / file).exists():
        continue   # e.g. the ablation lab before its author adds it
    group = "Browse" if key in ("overview", "browser", "unit", "image") else "Act"
    groups[group].append(st.Page(file, title=title, icon=icon, url_path=url,
                                 default=key == "overview"))

page = st.navigation(groups)
st.session_state["_ctx"] = common.sidebar()
page.run()
