"""Export: download the unit table as CSV, JSON, Parquet or NetDissect's tally.csv, and the
visualisations drawn so far (PNGs with their trust figures, zip)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from dissect.runs.export import export_run, netdissect_table
from dissect.visualize.cache import zip_visualisations
from studio import common
from studio.data import get_run, units_table

ctx = common.need_run()
st.title("Export")
st.caption(f"Unit tables of `{ctx.entry.name}` as files. Units are 0-indexed, except in the "
           "NetDissect layout (1-indexed, sorted by score, as NetDissect writes tally.csv).")

scope = st.radio("Layers", [f"this layer ({ctx.layer})", f"all layers ({len(ctx.layers)})"],
                 key="export_scope", horizontal=True)
layer = ctx.layer if scope.startswith("this") else None


@st.cache_data(max_entries=32, show_spinner="Preparing the file…")
def exported(run_path: str, stamp: str, fmt: str, layer: str | None) -> dict[str, bytes]:
    """{file name: bytes} written by dissect.runs.export.export_run into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("nd" if fmt == "netdissect" else f"units.{fmt}")
        return {p.name: p.read_bytes() for p in export_run(run_path, fmt, layer=layer, out=out)}


FORMATS = [("csv", "CSV", "text/csv", "one row per unit, a `layer` column"),
           ("json", "JSON", "application/json", "config, concepts and units per layer"),
           ("parquet", "Parquet", "application/octet-stream", "typed columns, for pandas/arrow"),
           ("netdissect", "NetDissect CSV", "text/csv", "tally.csv layout, one file per layer")]
stem = f"{ctx.entry.name}-{layer or 'all'}"
cols = st.columns(len(FORMATS))
for col, (fmt, title, mime, note) in zip(cols, FORMATS):
    with col.container(border=True):
        st.markdown(f"**{title}**")
        st.caption(note)
        try:
            files = exported(ctx.path, ctx.stamp, fmt, layer)
        except (ValueError, OSError, ImportError) as e:
            st.error(f"{title} export failed: {e}")
            continue
        for name, data in files.items():
            fname = f"{stem}.{fmt}" if fmt != "netdissect" else f"{ctx.entry.name}-{name}"
            st.download_button(f"Download {name if fmt == 'netdissect' else fmt}", data,
                               file_name=fname, mime=mime, key=f"dl_{fmt}_{name}",
                               icon=":material/download:", width="stretch")

vis_zip = zip_visualisations(ctx.path)
if vis_zip is not None:
    st.download_button("Download the visualisations (PNG + trust figures, zip)", vis_zip,
                       file_name=f"{ctx.entry.name}-visualisations.zip", mime="application/zip",
                       key="dl_vis", icon=":material/download:")

st.subheader("Preview")
tab1, tab2 = st.tabs(["Unit table", "NetDissect layout"])
with tab1:
    st.dataframe(units_table(ctx.path, ctx.layer, ctx.stamp), hide_index=True, height=320)
with tab2:
    st.dataframe(netdissect_table(get_run(ctx.path, ctx.stamp), ctx.layer), hide_index=True,
                 height=320)
st.caption(f"From a shell: `python -m dissect export {ctx.path} --format netdissect`")
