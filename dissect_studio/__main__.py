"""python -m dissect_studio run app.py [streamlit options]: `streamlit ...` with a warm start.

Before handing over to Streamlit's own command line it
- starts the studio's heavy imports in a background thread (studio/warm.py), so the first page
  a fresh server serves does not wait on pandas, plotly and the run readers;
- routes every request through app.py (the mode `st.navigation` switches a server to anyway), so
  a shared link opened first on a fresh server draws the studio's frame and a spinner at once
  instead of running the page file blank in Streamlit's pages/-folder mode.
`dissect studio` and `make run` start the server this way; `streamlit run app.py` still works.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent        # holds app.py, pages/, studio/ (or links)
    for path in (here.parent, here):              # dissect (checkout root or site), studio/
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from studio import warm
    warm.start()
    try:
        from streamlit.runtime.pages_manager import PagesManager
        PagesManager.uses_pages_directory = False     # what st.navigation sets on first use
    except (ImportError, AttributeError):             # another Streamlit: the hand-over in nav
        pass
    from streamlit.web import cli
    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
