"""Probe sets: images with concept labels, in one item/batch type for every source.

    probe = open_probe("broden:/data/broden1_224", categories=["object", "part"])
    loader = probe_loader(probe, batch_size=32, workers=1)
    for batch in loader:            # ProbeBatch
        batch.images                # float32 B×3×H×W in [0, 1], not normalised
        batch.pixel["object"]       # int32 B×P×h×w concept ids, 0 = unlabelled
        batch.scalar["scene"]       # int32 B×L image-level concept ids, 0-padded

Concept ids are global across categories (Broden's label.csv numbering); 0 is never a concept.
Sources: `broden:DIR` (dissect.probes.broden), `toyworld[:N]` (dissect.toyworld), `folder:DIR` with a
segmenter (segmenters/). Decoding happens in `__getitem__`, so DataLoader workers overlap it
with the forward pass.
"""
from __future__ import annotations

from dissect.errors import ProbeError, RunError
from dissect.probes.types import ProbeSet


MAX_TOYWORLD = 100_000     # images a toyworld:N probe may ask for (a world is built for it)


def toyworld_size(spec: str, cap: int = MAX_TOYWORLD) -> int | None:
    """N of `toyworld[:N]` (None: the default size); ProbeError unless 1 <= N <= cap."""
    arg = str(spec).partition(":")[2].strip()
    if not arg:
        return None
    if not arg.isdigit() or int(arg) < 1:
        raise ProbeError(f"'{spec}' needs a positive whole number of images, e.g. toyworld:500")
    if int(arg) > cap:
        raise ProbeError(f"'{spec}' asks for {int(arg):,} images, over the limit of {cap:,}; "
                         f"use toyworld:{cap} or fewer")
    return int(arg)


def open_run_probe(run) -> ProbeSet:
    """Reopen the probe set a run used (same spec and options, same image order).

        probe = open_run_probe(open_run("runs/r18"))
    """
    cfg = run.config
    spec = cfg.get("probe")
    if not spec:
        raise RunError(f"{run.path / 'run.json'} has no config.probe; rerun the dissection")
    opts = {k: v for k, v in (cfg.get("probe_options") or {}).items() if v is not None}
    return open_probe(spec, **opts)


def open_probe(spec: str, **options) -> ProbeSet:
    """Open a probe set from its command-line spec.

    `broden:DIR`, `toyworld[:N]` (N images, built and cached; `seed=` picks the world), or
    `folder:DIR` (needs `segmenter=`, e.g. "color,ade20k"). Options: categories, split, limit,
    seed, segmenter, cache_dir, restyle (toyworld only: "sea:snow"), pair (toyworld only: each
    scene with and without that object).
    """
    kind, _, arg = str(spec).partition(":")
    limit = options.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ProbeError(f"--limit {limit} must be a positive number of images (or leave it out)")
    if kind in ("broden", "folder") and not arg.strip():
        raise ProbeError(f"probe '{spec}' names no folder; write {kind}:DIR")
    if options.get("restyle") and kind != "toyworld":
        raise ProbeError(f"--restyle {options['restyle']} works on ToyWorld probes only "
                         f"(toyworld:N), not on '{spec}'")
    if options.get("pair") is not None and kind != "toyworld":
        raise ProbeError(f"--pair {options['pair']} needs a ToyWorld probe (toyworld:N), not "
                         f"'{spec}'; drop --pair")
    if kind != "toyworld":
        options.pop("restyle", None)
    if "pair" in options and options["pair"] is None:
        options = {k: v for k, v in options.items() if k != "pair"}
    if kind == "broden":
        from dissect.probes.broden import BrodenProbe
        return BrodenProbe(arg, **options)
    if kind == "toyworld":
        from dissect.toyworld import toyworld_probe
        return toyworld_probe(toyworld_size(spec), **options)
    if kind == "folder":
        from segmenters.folder import FolderProbe
        return FolderProbe(arg, **options)
    raise ProbeError(
        f"unknown probe '{spec}': use broden:DIR, toyworld[:N] or folder:DIR (with --segmenter)"
    )
