"""The dissection studio: `streamlit run app.py` (runs from $DISSECT_RUNS, default runs/).

Pages live in pages/ (page scripts only); the shared UI (menu, run/layer pickers, cached run
data, background jobs) lives in studio/. The sidebar's pickers are shared by every page and
mirrored in the URL.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from studio import nav  # noqa: E402  (streamlit only: fast)

# st.navigation first, before the imports that pull in torch: a fresh server leaves Streamlit's
# pages/-folder mode as soon as any session has run it.
page = nav.navigation()

from studio import warm  # noqa: E402

if not warm.ready():                        # a fresh server: the frame and a spinner at once,
    with st.spinner("Starting the studio (first page after a restart)…"):
        warm.wait()                         # while pandas, plotly and the run readers import

from studio import common  # noqa: E402

with nav.through_app():
    top = st.sidebar.container()            # the menu above the pickers, drawn after them so
    st.session_state["_ctx"] = common.sidebar()   # its links carry the chosen run and layer
    nav.menu(top)
    try:
        page.run()
    except (ValueError, OSError, KeyError, EOFError) as err:   # unreadable run files, not bugs
        st.error(f"Could not read this run's files: {type(err).__name__}: {err}. If the folder "
                 "was damaged, run the same `python -m dissect run ... --out` command again.")
