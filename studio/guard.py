"""Show a user error on the page instead of a traceback (not a page).

    doc = shown(read_edit, out)      # the result, or None after st.error(one line)
"""
from __future__ import annotations

from typing import Any, Callable

import streamlit as st


def shown(read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """read(*args, **kwargs), or None after showing its user error (dissect.errors) on the page."""
    from dissect.errors import USER_ERRORS
    try:
        return read(*args, **kwargs)
    except USER_ERRORS as e:
        st.error(str(e))
        return None
