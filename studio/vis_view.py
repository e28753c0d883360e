"""The unit page's visualisation panel: the image the unit wants to see, with its trust line.

    vis_view.section(ctx, unit)    # cached: the picture and the trust figures; else a button
                                   # that draws it as a background job (progress, Cancel)

Drawn once per (run, layer, unit) into `<run>/cache/vis/<layer>/` (dissect.visualize.cache)
and shared by every session; the unit browser shows the kept ones on its cards.
"""
from __future__ import annotations

import streamlit as st

from dissect.visualize.cache import STUDIO, cached, draw_cached
from studio import background as bg
from studio import job_view, lab


def _key(ctx, unit: int) -> tuple:
    return (ctx.path, ctx.layer, int(unit), STUDIO.steps, STUDIO.size, STUDIO.method)


def vis_job(ctx, unit: int) -> bg.Job:
    """The background job drawing `unit` of the page's layer (one per key, shared)."""
    from dissect.runs.folder import open_run
    name, weights = lab.run_model(open_run(ctx.path))

    def work(job, lm):
        job.step(0, STUDIO.steps, "starting")
        return draw_cached(lm, open_run(ctx.path), ctx.layer, unit, STUDIO, progress=job.step)
    return lab._submit("vis", (name, weights) + _key(ctx, unit),
                       f"Drawing what unit {unit} wants to see", work)


def _show(row: dict) -> None:
    st.image(row["png"], width="stretch",
             caption=f"{row.get('method', 'fourier')}, {row.get('steps', '?')} steps, "
                     f"{row.get('size', '?')} px")
    st.markdown(f"**{row['trust'][0].upper() + row['trust'][1:]}.**")
    bits = [f"activation {row['activation']:.3g}"]
    if row.get("best_natural") is not None:
        bits.append(f"best natural image {row['best_natural']:.3g}")
    if row.get("stability") is not None:
        bits.append(f"seed similarity {row['stability']:.2f}")
    if row.get("path_score") is not None:
        bits.append(f"path score {row['path_score']:.2f}")
    st.caption(" · ".join(bits) + ". Path score: how close its earlier-layer responses come to "
               "the top images' (1 = as close as they are to each other, 0 = as close as other "
               "images); Geirhos et al. 2024 show a picture can excite a unit by another route.")


def section(ctx, unit: int) -> None:
    """Draw the panel for `unit` of the page's run and layer."""
    st.subheader("What it wants to see")
    row = cached(ctx.path, ctx.layer, unit)
    if row is not None:
        _show(row)
        return
    key = ("vis",) + tuple(lab.run_model(_open(ctx))) + _key(ctx, unit)
    job = bg.find(key)
    if job is not None:
        result = job_view.result(job)
        if result is not None:
            _show(result)
        return
    st.caption("A picture optimised to excite this unit (Lucid's decorrelated Fourier image, "
               f"{STUDIO.steps} steps), with checks that say how far to trust it. Drawn once, "
               "then kept with the run.")
    name, _weights = lab.run_model(_open(ctx))
    if st.button("Draw it", key=f"vis_draw_{ctx.layer}_{unit}", icon=":material/brush:"):
        lab.confirm_model_file(name)
        vis_job(ctx, unit)
        st.rerun()


def _open(ctx):
    from dissect.runs.folder import open_run
    return open_run(ctx.path)


def direction_job(model: str, weights: str, d, key: tuple) -> bg.Job:
    """The background job drawing what direction `d` wants to see at its layer (shared)."""
    import tempfile
    from pathlib import Path
    from dissect.visualize import Targets, draw

    def work(job, lm):
        job.step(0, STUDIO.steps, "starting")
        targets = Targets.of_directions(d.vector[None], [d.concept or "direction"])
        with tempfile.TemporaryDirectory() as tmp:
            row = draw(lm, d.layer, targets, STUDIO, tmp, kind="direction", progress=job.step)[0]
            row["png_bytes"] = Path(row["path"]).read_bytes()
        row.update(steps=STUDIO.steps, size=STUDIO.size, method=STUDIO.method)
        return row
    return lab._submit("visdir", (model, weights) + tuple(key) + (STUDIO.steps, STUDIO.size),
                       f"Drawing what the '{d.concept}' direction wants to see", work)


def direction_section(model: str, weights: str, d, key: tuple) -> None:
    """The Directions page's picture of direction `d` (`key`: what identifies it)."""
    st.caption(f"An image optimised to raise the projection on this direction at {d.layer} "
               f"(mean over positions; {STUDIO.steps} steps), with its stability across two "
               "starts.")
    job = lab.job_of("visdir", (model, weights) + tuple(key) + (STUDIO.steps, STUDIO.size))
    if job is None:
        if st.button("Draw it", key="dir_vis_go", icon=":material/brush:"):
            direction_job(model, weights, d, key)
            st.rerun()
        return
    row = job_view.result(job)
    if row is not None:
        c1, c2 = st.columns([1, 2])
        c1.image(row["png_bytes"], width="stretch",
                 caption=f"{row['method']}, {row['steps']} steps, {row['size']} px")
        c2.markdown(f"**{row['trust'][0].upper() + row['trust'][1:]}.**")
        c2.caption(f"max projection on the final image {row['activation']:.3g} "
                   f"(σ of the probe's projections {d.sigma:.3g})")
