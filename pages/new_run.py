"""New run: choose model, weights, layers, probe set and quantile, start a background
dissection, watch its progress, cancel it."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import streamlit as st

from dissect.runs.schema import read_info
from studio import common, jobs

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["toyworld", "resnet18", "resnet50", "alexnet", "vgg16", "efficientnet_lite0",
          "densenet161", "other…"]
DEFAULT_LAYERS = {"toyworld": "conv5,conv6", "resnet18": "layer3,layer4", "resnet50": "layer4",
                  "alexnet": "features.10", "vgg16": "features.28",
                  "efficientnet_lite0": "conv_head", "densenet161": "features"}
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")

common.context()
root = common.runs_root()
st.title("New run")
st.caption(f"Runs are written under `{root}` and run in the background: you can browse other "
           "runs, close the tab, or watch from another browser meanwhile.")


@st.cache_data(ttl=900, show_spinner="Listing the model's layers…")
def list_layers(model: str, weights: str) -> tuple[list[dict], str | None]:
    """`python -m dissect layers --json` in a subprocess (keeps torch models out of the app)."""
    try:
        p = subprocess.run([sys.executable, "-m", "dissect", "layers", "--model", model,
                            "--weights", weights, "--json"], cwd=ROOT, capture_output=True,
                           text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return [], "listing the layers took over 3 minutes"
    if p.returncode != 0:
        return [], (p.stderr.strip().splitlines() or ["unknown error"])[-1]
    try:
        return json.loads(p.stdout), None
    except ValueError:
        return [], "the layer listing was not JSON"


c1, c2 = st.columns(2)
with c1:
    st.subheader("Model")
    model = st.selectbox("Model", MODELS, key="nr_model",
                         help="torchvision names, the embedded ToyWorld model, or a preset")
    if model == "other…":
        model = st.text_input("Model name or file.py:factory", key="nr_model_other").strip()
    weights = st.text_input("Weights", "default", key=f"nr_weights_{model}",
                            help="default: the trained weights (a preset's own, torchvision's "
                                 "DEFAULT, downloaded once when online); none: random init, a "
                                 "baseline; an enum such as IMAGENET1K_V1; a checkpoint file "
                                 "or its http(s) URL").strip()
    layer_opts: list[str] = []
    if model and st.toggle("List the model's layers", key="nr_list", value=False,
                           help="Runs `python -m dissect layers --json` once (a few seconds)"):
        infos, err = list_layers(model, weights)
        if err:
            st.error(f"Could not list layers of {model}: {err}")
        layer_opts = [i["name"] for i in infos if i.get("spatial")]
        shapes = {i["name"]: i.get("shape") for i in infos}
    if layer_opts:
        big = [n for n in layer_opts if (shapes.get(n) or [0, 1, 1])[-1] > 1]
        pref = [n for n in DEFAULT_LAYERS.get(model, "").split(",") if n in layer_opts]
        layers = st.multiselect("Layers", layer_opts, default=pref or big[-1:] or layer_opts[-1:],
                                key="nr_layers",
                                format_func=lambda n: f"{n}  {shapes.get(n)}")
    else:
        text = st.text_input("Layers (comma separated)",
                             DEFAULT_LAYERS.get(model, ""),
                             key=f"nr_layers_text_{model}",
                             help="Module names as named_modules gives them, e.g. layer4, "
                                  "features.11; or switch on 'List the model's layers'")
        layers = [s.strip() for s in text.split(",") if s.strip()]
with c2:
    st.subheader("Probe set")
    kind = st.radio("Images and concept labels", ["toyworld", "broden", "folder"], key="nr_kind",
                    horizontal=True, captions=["embedded, generated", "Broden folder on disk",
                                               "any images + segmenters"])
    segmenter = None
    if kind == "toyworld":
        n = st.number_input("Images", 20, 20000, 500, step=50, key="nr_n")
        probe = f"toyworld:{int(n)}"
    else:
        folder = st.text_input("Folder", key=f"nr_dir_{kind}",
                               placeholder="/data/broden1_224" if kind == "broden" else
                               "/data/my_photos").strip()
        probe = f"{kind}:{folder}"
        if kind == "folder":
            segs = st.multiselect("Segmenters", ["color", "ade20k"], default=["color"],
                                  key="nr_segs", help="color needs no weights; ade20k needs "
                                  "the UperNet weights (Hugging Face cache, downloaded "
                                  "there once when online)")
            segmenter = ",".join(segs) or None
    q1, q2, q3 = st.columns(3)
    quantile = q1.number_input("Quantile", 0.0001, 0.5, 0.005, step=0.001, format="%.4f",
                               key="nr_q", help="Top fraction of each unit's activations "
                                                "that counts as active (T_k)")
    batch = q2.number_input("Batch size", 1, 512, 32, key="nr_bs")
    device = q3.selectbox("Device", ["cpu", "cuda"], key="nr_dev")
    ray_address = st.text_input(
        "Ray cluster (optional)", "", key="nr_ray", placeholder="local:2 or HEAD_IP:6379",
        help="Shard the run over Ray: `local:N` starts a local cluster of N workers; "
             "HOST:PORT joins a running one (`ray start --head`). The probe folder must be at "
             "the same path on every node. Empty: one process.").strip()

default_name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model or 'model'}-{kind}-"
                      f"{dt.datetime.now():%m%d-%H%M}")
name = st.text_input("Run name", default_name, key="nr_name",
                     help="A folder name under the runs root (letters, digits, . _ -)").strip()

problems = []
if not model:
    problems.append("pick a model")
if not layers:
    problems.append("give at least one layer")
if kind != "toyworld" and not probe.split(":", 1)[1]:
    problems.append(f"give the {kind} folder")
elif kind != "toyworld" and not Path(probe.split(":", 1)[1]).is_dir():
    problems.append(f"the folder {probe.split(':', 1)[1]} does not exist")
if ray_address and not jobs.RAY_OK.match(ray_address):
    problems.append("give the Ray cluster as local, local:N or HOST:PORT (or leave it empty)")
out = common.safe_run_path(name, root) if NAME_OK.match(name or "") else None
if out is None:
    problems.append("use a plain run name (letters, digits, . _ -)")
elif (out / "run.json").exists():
    try:
        status = read_info(out).get("status")
    except ValueError:
        status = "unreadable"
    if status == "complete":
        problems.append(f"a complete run named '{name}' exists; pick another name")

cmd = jobs.run_command(model=model or "?", weights=weights or "default", layers=layers,
                       probe=probe, segmenter=segmenter, quantile=quantile,
                       batch_size=int(batch), device=device, ray=ray_address or None,
                       out=out or root / (name or "run")) if model else []
st.code(" ".join(["python"] + cmd[1:]) if cmd else "", language="bash", wrap_lines=True)
if problems:
    st.caption("To start: " + "; ".join(problems) + ".")


def _start() -> None:
    """Start the run (button callback: runs once per click, before the page reruns)."""
    try:
        pid = jobs.start(out, cmd, cwd=ROOT)
        st.session_state["nr_msg"] = ("success", f"Started '{name}' (pid {pid}).")
    except jobs.AlreadyRunning as e:
        st.session_state["nr_msg"] = ("warning", f"{e}; watching it below instead of starting "
                                                 "it twice.")
    except OSError as e:
        st.session_state["nr_msg"] = ("error", f"Could not start the run: {e}")
        return
    st.session_state.setdefault("nr_watched", []).append(name)


st.button("Start dissection", type="primary", icon=":material/play_arrow:",
          disabled=bool(problems), key="nr_start", on_click=_start)
if "nr_msg" in st.session_state:
    kind_, text_ = st.session_state.pop("nr_msg")
    getattr(st, kind_)(text_)

st.divider()
st.subheader("Runs in progress")


def _error_line(log: str) -> str | None:
    """The CLI's one-line error ("error: ...") in a run's log, if it printed one."""
    lines = [l for l in log.splitlines() if l.startswith("error: ")]
    return lines[-1][len("error: "):] if lines else None


def _short(message: str, root: Path) -> str:
    """A message without the server's runs-root path (run folders by name only)."""
    return message.replace(str(root) + os.sep, "").replace(str(root), "the runs folder")


@st.fragment(run_every=2.0)
def watch() -> None:
    """Live progress of every run with a lock or status running (polls run.json)."""
    watched = st.session_state.setdefault("nr_watched", [])
    folders = {p.name: p for p in jobs.jobs(root) if jobs.running_pid(p) is not None}
    for e in common.scan_runs(str(root)):
        if e.status == "running" or e.name in watched:
            folders.setdefault(e.name, e.path)
    for nm in watched:
        if common.safe_run_path(nm, root) is not None:
            folders.setdefault(nm, root / nm)
    if not folders:
        st.caption("Nothing running. Finished runs appear in the sidebar's run picker.")
        return
    for nm, path in sorted(folders.items()):
        pid = jobs.running_pid(path)
        try:
            info = read_info(path)
        except ValueError:
            info = {"status": "starting" if pid else "not started"}
        status = info.get("status")
        with st.container(border=True):
            a, b = st.columns([5, 1], vertical_alignment="center")
            prog = info.get("progress") or {}
            total = max(1, int(prog.get("total") or 1))
            done = int(prog.get("done") or 0)
            if status == "running" and pid is None:
                status = "stopped (no process; start it again to resume)"
            a.markdown(f"**{nm}** · {status}" + (f" · pid {pid}" if pid else ""))
            if status in ("running", "starting"):
                a.progress(min(1.0, done / total), text=f"{prog.get('phase', 'starting')}: "
                                                        f"{done} / {prog.get('total', '?')}")
            tail = jobs.log_tail(path)
            if info.get("shards") and status != "complete":
                with a.expander(f"{len(info['shards'])} Ray shards", expanded=True):
                    for row in jobs.shard_lines(info):
                        st.progress(row["fraction"], text=row["text"])
            if status == "failed":
                a.error(_short(info.get("error") or "failed", root))
            elif pid is None and status != "complete" and _error_line(tail):
                a.error("The run stopped: " + _short(_error_line(tail), root))   # not in the log only
            elif status == "complete":
                a.success("complete — pick it in the sidebar's run picker")
                seen = st.session_state.setdefault("nr_seen_done", [])
                if nm not in seen:       # refresh the whole app so the picker lists it
                    seen.append(nm)
                    common.list_entries.clear()
                    st.rerun(scope="app")
            if pid is not None:
                if b.button("Cancel", key=f"cancel_{nm}", icon=":material/stop:"):
                    jobs.cancel(path)
                    st.rerun()
            if tail:
                with a.expander("log"):
                    st.code(tail)


watch()
