"""Widget state that lives in the URL: shareable, and kept across page switches.

    fields = [Field("cat", "browser_cats", [], "list"), Field("sort", "browser_sort", "IoU ↓")]
    restore("browser", fields)           # before the widgets: URL (or last visit) -> widgets
    ...widgets with those keys...
    common.set_params(**params("browser", fields))   # after them: widgets -> URL

A link or a page switch changes the URL; a widget change does not (yet). `restore` tells them
apart by remembering the URL it last wrote: only a URL it did not write sets the widgets. A
page reached without any of its parameters (from the menu) gets the state of its last visit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st


@dataclass
class Field:
    param: str                 # name in the URL
    key: str                   # the widget's key
    default: Any
    kind: str = "str"          # str | list | bool | range (a pair of floats)

    def encode(self, value: Any) -> str:
        if self.kind == "list":
            return ",".join(str(v) for v in value)
        if self.kind == "bool":
            return "1" if value else "0"
        if self.kind == "range":
            return f"{float(value[0]):g}-{float(value[1]):g}"
        return str(value)

    def decode(self, text: str) -> Any:
        """The value a URL text means; ValueError when it means nothing."""
        if self.kind == "list":
            return [v for v in text.split(",") if v]
        if self.kind == "bool":
            return text in ("1", "true", "True")
        if self.kind == "range":
            lo, _, hi = text.partition("-")
            return (float(lo), float(hi))
        return text


def _memo(page: str) -> str:
    return f"_urlstate_{page}"


def restore(page: str, fields: list[Field], valid: dict[str, Any] | None = None) -> None:
    """Set the widgets' session state from the URL when the URL changed from outside.

    `valid[param]` is a function value -> value or None (None: drop it) that fits a decoded
    value to the widget's options, so a stale or hostile link never breaks the widget."""
    valid = valid or {}
    url = {f.param: st.query_params[f.param] for f in fields if f.param in st.query_params}
    last = st.session_state.get(_memo(page))
    if last is not None and url == last:        # our own URL: the widgets are newer
        for f in fields:
            st.session_state.setdefault(f.key, f.default)   # a widget seen for the first time
        return
    source = url if (url or last is None) else last
    for f in fields:
        value = f.default
        if f.param in source:
            try:
                value = f.decode(source[f.param])
                if f.param in valid:
                    value = valid[f.param](value)
            except (ValueError, TypeError):
                value = None
            if value is None:
                value = f.default
        st.session_state[f.key] = value


def params(page: str, fields: list[Field]) -> dict[str, str]:
    """The URL parameters of the widgets' current values (defaults left out); remembered, so
    the next `restore` knows this URL is ours."""
    out = {}
    for f in fields:
        value = st.session_state.get(f.key, f.default)
        if value != f.default and not (f.kind == "range" and tuple(value) == tuple(f.default)):
            out[f.param] = f.encode(value)
    st.session_state[_memo(page)] = out
    return out
