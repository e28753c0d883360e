"""Shared UI of the studio: runs root, run/layer pickers, URL state, guards.

    ctx = common.sidebar()            # in app.py, before the page runs
    ctx = common.need_run()           # in a page: stops with a helpful page when no usable run
    common.set_params(unit=17)        # the page's own query parameters (run, layer are kept)

State lives in st.session_state ("run", "layer", "unit", "image") and in the URL's query
parameters, so every unit has a shareable link: ?run=r18&layer=layer4&unit=17. Every name that
comes from the URL or a widget is checked to resolve inside the runs root.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dissect.errors import RunError
from dissect.runs.render import category_color
from dissect.runs.schema import read_info
from studio.nav import PAGES, ensure_routed, go, menu, page_link  # noqa: F401 (re-export)

START_HINT = ("Start one with `make run` (builds the ToyWorld default run), on the **New run** "
              "page, or from a shell:\n\n```\npython -m dissect run --model resnet18 --weights none "
              "--layer layer3,layer4 --probe toyworld:200 --out {root}/my-run\n```")


def runs_root() -> Path:
    """The folder holding run folders: $DISSECT_RUNS, default `runs/`."""
    return Path(os.environ.get("DISSECT_RUNS", "runs")).resolve()


def safe_run_path(name: str | None, root: Path | None = None) -> Path | None:
    """root/name when `name` is one plain folder name inside the runs root, else None."""
    if not name or not isinstance(name, str) or "/" in name or "\\" in name or \
            name in (".", "..") or "\x00" in name:
        return None
    root = root or runs_root()
    path = (root / name).resolve()
    try:
        path.relative_to(root)
    except ValueError:
        return None
    return path if path.parent == root else None


def short_error(err: object, root: Path) -> str:
    """An error message without the server's paths: run folders are named, roots are not."""
    return str(err).replace(str(root) + os.sep, "").replace(str(root), "the runs folder")


@dataclass
class RunEntry:
    name: str
    path: Path
    status: str           # running|complete|failed|cancelled|unreadable
    error: str | None
    updated: str


@st.cache_data(ttl=2, show_spinner=False)
def list_entries(root: str) -> list[RunEntry]:
    """scan_runs, cached for two seconds."""
    return scan_runs(root)


def scan_runs(root: str) -> list[RunEntry]:
    """Every folder with a run.json under `root`, newest first; unreadable ones included."""
    out = []
    r = Path(root)
    if not r.is_dir():
        return out
    for d in r.iterdir():
        if not d.is_dir() or not (d / "run.json").exists():
            continue
        try:
            info = read_info(d)
            out.append(RunEntry(d.name, d, str(info.get("status", "unknown")),
                                info.get("error"), str(info.get("updated") or "")))
        except RunError as e:
            out.append(RunEntry(d.name, d, "unreadable", short_error(e, r), ""))
    out.sort(key=lambda e: (e.updated, e.name), reverse=True)
    return out


@dataclass
class Ctx:
    root: Path
    entries: list[RunEntry]
    entry: RunEntry | None
    layer: str | None
    layers: list[str]

    @property
    def path(self) -> str:
        return str(self.entry.path) if self.entry else ""

    @property
    def stamp(self) -> str:
        from studio.data import stamp
        return stamp(self.path)


def _run_label(entries: list[RunEntry], name: str) -> str:
    status = _status(entries, name)
    return name if status == "complete" else f"{name} · {status}"


def _qp(key: str) -> str | None:
    v = st.query_params.get(key)
    return v if isinstance(v, str) and v else None


def _on_run_change() -> None:
    st.session_state["run"] = st.session_state["_pick_run"]
    st.query_params["run"] = st.session_state["_pick_run"]
    st.query_params.pop("layer", None)
    st.session_state.pop("unit", None)


def _on_layer_change() -> None:
    st.session_state["layer"] = st.session_state["_pick_layer"]
    st.query_params["layer"] = st.session_state["_pick_layer"]
    st.session_state.pop("unit", None)


def _int_param(key: str) -> None:
    v = _qp(key)
    if v is not None:
        try:
            st.session_state[key] = int(v)
        except ValueError:
            pass


def run_layers(entry: RunEntry | None) -> list[str]:
    """Layers of a readable run (config order, folders on disk first)."""
    if entry is None or entry.status == "unreadable":
        return []
    from studio.data import get_run, stamp
    try:
        return get_run(str(entry.path), stamp(entry.path)).layers
    except (RunError, OSError):
        return []


def sidebar() -> Ctx:
    """Run and layer pickers in the sidebar, synced with session state and the URL."""
    root = runs_root()
    entries = list_entries(str(root))
    names = [e.name for e in entries]
    _int_param("unit")
    _int_param("image")
    want = _qp("run")
    if want is not None and want not in names and safe_run_path(want, root) is None:
        st.session_state["bad_param"] = f"'{want}' is not a run folder name"
        want = None
    name = want if want in names else st.session_state.get("run")
    if name not in names:
        if want is not None:
            st.session_state["bad_param"] = f"no run named '{want}' under {root}"
        name = names[0] if names else None
    entry = next((e for e in entries if e.name == name), None)
    if entry is not None and entry.status != "unreadable":    # the listing may be 2 s old
        try:
            info = read_info(entry.path)
            entry = RunEntry(entry.name, entry.path, str(info.get("status", "unknown")),
                             info.get("error"), str(info.get("updated") or ""))
        except RunError as err:
            entry = RunEntry(entry.name, entry.path, "unreadable", short_error(err, root), "")
    with st.sidebar:
        if not entries:
            st.caption(f"No runs under `{root}`")
        else:
            st.session_state["_pick_run"] = name
            st.selectbox("Run", names, key="_pick_run", on_change=_on_run_change,
                         format_func=lambda n: _run_label(entries, n),
                         help=f"Run folders under {root}")
    layers = run_layers(entry)
    want_layer = _qp("layer")
    layer = want_layer if want_layer in layers else st.session_state.get("layer")
    if layer not in layers:     # default: the last layer of units (not a feature layer)
        layer = next((l for l in reversed(layers) if "@" not in l), layers[-1]) if layers else None
    with st.sidebar:
        if layers:
            from dissect.features.layer import layer_label
            st.session_state["_pick_layer"] = layer
            st.radio("Layer", layers, key="_pick_layer", on_change=_on_layer_change,
                     horizontal=len(layers) <= 3, format_func=layer_label)
        if entry is not None:
            _run_caption(entry)
    if name is not None and st.session_state.get("run") != name:
        st.session_state.pop("unit", None) if st.session_state.get("run") else None
    st.session_state["run"] = name
    st.session_state["layer"] = layer
    _sync_run_layer()
    return Ctx(root, entries, entry, layer, layers)


def _status(entries: list[RunEntry], name: str) -> str:
    return next((e.status for e in entries if e.name == name), "")


def _run_caption(entry: RunEntry) -> None:
    if entry.status == "unreadable":
        st.caption("⚠️ damaged run folder: its run.json cannot be read")
        return
    from studio.data import get_run, stamp
    try:
        info = get_run(str(entry.path), stamp(entry.path)).info
    except RunError:
        return
    cfg, counts = info.get("config", {}), info.get("counts", {})
    st.caption(f"**{cfg.get('model', '?')}** · weights `{cfg.get('weights', '?')}`  \n"
               f"probe `{cfg.get('probe', '?')}` · {counts.get('images', '?')} images · "
               f"{counts.get('concepts', '?')} concepts  \nstatus **{entry.status}**")
    from dissect.models.registry import RANDOM_BADGE, run_random_init
    if run_random_init(info):     # nobody should cite this as a trained network
        st.badge(RANDOM_BADGE, icon=":material/casino:", color="orange")


def set_state(**values: object) -> None:
    """Set session state and the URL together (in callbacks: the URL wins on the next run)."""
    for k, v in values.items():
        st.session_state[k] = v
        st.query_params[k] = str(v)


def _sync_run_layer() -> None:
    """Put the chosen run and layer in the URL, keeping the page's own parameters (the page
    reads them after the sidebar ran)."""
    want = st.query_params.to_dict()
    want.update({k: str(st.session_state[k]) for k in ("run", "layer")
                 if st.session_state.get(k) is not None})
    if dict(st.query_params.to_dict()) != want:
        st.query_params.from_dict(want)


def set_params(**extra: object) -> None:
    """Make the URL ?run=..&layer=..(&extra): what the user sees is what a link shares."""
    want = {"run": st.session_state.get("run"), "layer": st.session_state.get("layer")}
    want.update(extra)
    want = {k: str(v) for k, v in want.items() if v is not None}
    if dict(st.query_params.to_dict()) != want:
        st.query_params.from_dict(want)


def context() -> Ctx:
    """This run's Ctx (made by app.py's sidebar); call once per page run.

    A page executed without app.py (Streamlit's pages/ folder mode on a fresh server's first
    deep link) hands over to app.py; under AppTest it draws the menu and sidebar itself.
    """
    ctx = st.session_state.pop("_ctx", None)
    if not ensure_routed() or ctx is None:
        top = st.sidebar.container()
        ctx = sidebar()
        menu(top)
    return ctx


def need_run(complete: bool = True) -> Ctx:
    """The context of a browsable run, or a helpful page and st.stop()."""
    ctx = context()
    bad = st.session_state.pop("bad_param", None)
    if bad:
        st.warning(f"The link asked for {bad}; showing the newest run instead.")
    if ctx.entry is None:
        st.title("No runs yet")
        st.info(f"There is no dissection run under `{ctx.root}` yet.\n\n" +
                START_HINT.format(root=ctx.root))
        page_link("new", label="Start a run on the New run page")
        st.stop()
    e = ctx.entry
    if e.status == "unreadable":
        st.title(f"Run '{e.name}' cannot be read")
        st.error(e.error or "unknown problem")
        st.caption("Its run.json is damaged or from another version of the tool; the other "
                   "runs are unaffected. Rerun the dissection with this version (the same "
                   "`python -m dissect run ... --overwrite` command).")
        st.stop()
    if complete and e.status != "complete":
        run_status_page(ctx)
        st.stop()
    if ctx.layer is None:
        st.title(f"Run '{e.name}' has no layers")
        st.error("Its run.json lists no layer with data; rerun the dissection.")
        st.stop()
    missing = [f for f in ("concepts.csv", "images.csv", f"layers/{ctx.layer}/units.csv",
                           f"layers/{ctx.layer}/iou.npy", f"layers/{ctx.layer}/topk.npz",
                           f"layers/{ctx.layer}/imgmax.npy") if not (e.path / f).is_file()]
    if missing:
        st.title(f"Run '{e.name}' is missing files")
        st.error(f"{', '.join(missing)} missing under {e.path} although run.json says complete. "
                 "Run the same `python -m dissect run ... --out` command again to rebuild them.")
        st.stop()
    from studio.data import layer_arrays, units_table
    try:                 # read through dissect.runs.safe once (cached): damage is one message
        units_table(str(e.path), ctx.layer, ctx.stamp)
        layer_arrays(str(e.path), ctx.layer, ctx.stamp)
    except RunError as err:
        st.title(f"Run '{e.name}' cannot be read")
        st.error(short_error(err, ctx.root))
        st.stop()
    return ctx


def run_status_page(ctx: Ctx) -> None:
    """Status, progress and error of an incomplete run (a running one refreshes itself)."""
    e = ctx.entry
    st.title(f"Run '{e.name}' is {e.status}")
    if e.status == "running":
        _live_progress(str(e.path))
        st.caption("This page follows the run and opens it when it completes. Cancel it on "
                   "the New run page.")
        page_link("new", label="Watch it on the New run page")
        return
    info = read_info(e.path)
    if e.status == "failed":
        st.error(info.get("error") or "the run failed without a message")
    else:
        st.warning(info.get("error") or f"status: {e.status}")
    st.caption("Run the same `python -m dissect run ... --out` command again to resume it, "
               "or start it again from the New run page.")
    with st.expander("run.json"):
        st.json(info)


@st.fragment(run_every=2.0)
def _live_progress(path: str) -> None:
    try:
        info = read_info(path)
    except RunError as err:
        st.error(str(err))
        return
    if info.get("status") != "running":
        list_entries.clear()
        st.rerun(scope="app")
    prog = info.get("progress") or {}
    total = max(1, int(prog.get("total") or 1))
    st.progress(min(1.0, int(prog.get("done") or 0) / total),
                text=f"{prog.get('phase', '?')}: {prog.get('done', 0)} / {prog.get('total', '?')}")
    try:
        import datetime as dt
        age = (dt.datetime.now(dt.timezone.utc) -
               dt.datetime.fromisoformat(str(info.get("updated")))).total_seconds()
    except (TypeError, ValueError):
        age = 0
    if age > 120:
        st.warning(f"No progress written for {age / 60:.0f} minutes: the process may have "
                   "stopped. Run the same `python -m dissect run ... --out` command to resume.")


def badge(category: str) -> str:
    """HTML badge of a category in its colour."""
    c = category_color(category)
    r, g, b = (int(c[i:i + 2], 16) for i in (1, 3, 5))
    text = f"#{int(r * .6):02x}{int(g * .6):02x}{int(b * .6):02x}"    # darker, readable
    return (f"<span style='background:{c}33;color:{text};border:1px solid {c}aa;"
            f"border-radius:8px;"
            f"padding:0 6px;font-size:0.8em;font-weight:600'>{html.escape(category)}</span>")


def unit_title(row) -> str:
    """'unit 17 · tree (object) · IoU 0.123' for a units.csv row."""
    return f"unit {int(row['unit'])} · {row['label'] or '—'} ({row['category']}) · IoU {row['iou']:.3f}"
