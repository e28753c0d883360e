"""The dissection studio: `streamlit run app.py` (runs from $DISSECT_RUNS, default runs/).

Pages live in pages/ and are registered with st.navigation (pages/common.py: PAGES); the
sidebar's run and layer pickers are shared by every page and mirrored in the URL.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages.nav import navigation  # noqa: E402  (streamlit only: fast)

# st.navigation first, before the imports that pull in torch: a fresh server leaves Streamlit's
# legacy pages/-folder menu as soon as any session has run it.
page = navigation()

from pages import common  # noqa: E402
st.session_state["_ctx"] = common.sidebar()
try:
    page.run()
except (ValueError, OSError, KeyError, EOFError) as err:   # unreadable run files, not bugs
    st.error(f"Could not read this run's files: {type(err).__name__}: {err}. If the folder was "
             "damaged, run the same `python -m dissect run ... --out` command again.")
