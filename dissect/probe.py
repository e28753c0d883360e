"""Probe sets: images with concept labels, in one item/batch type for every source.

    probe = open_probe("broden:/data/broden1_224", categories=["object", "part"])
    loader = probe_loader(probe, batch_size=32, workers=1)
    for batch in loader:            # ProbeBatch
        batch.images                # float32 B×3×H×W in [0, 1], not normalised
        batch.pixel["object"]       # int32 B×P×h×w concept ids, 0 = unlabelled
        batch.scalar["scene"]       # int32 B×L image-level concept ids, 0-padded

Concept ids are global across categories (Broden's label.csv numbering); 0 is never a concept.
Sources: `broden:DIR` (dissect.broden), `toyworld[:N]` (dissect.toyworld), `folder:DIR` with a
segmenter (segmenters/). Decoding happens in `__getitem__`, so DataLoader workers overlap it
with the forward pass.
"""
from __future__ import annotations

from dissect.probeset import (ProbeBatch, ProbeError, ProbeItem, ProbeSet,  # noqa: F401
                              collate, probe_loader)


def open_probe(spec: str, **options) -> ProbeSet:
    """Open a probe set from its command-line spec.

    `broden:DIR`, `toyworld[:N]` (N images, built and cached; `seed=` picks the world), or
    `folder:DIR` (needs `segmenter=`, e.g. "color,ade20k"). Options: categories, split, limit,
    seed, segmenter, cache_dir.
    """
    kind, _, arg = spec.partition(":")
    if kind == "broden":
        from dissect.broden import BrodenProbe
        return BrodenProbe(arg, **options)
    if kind == "toyworld":
        from dissect.toyworld import toyworld_probe
        return toyworld_probe(int(arg) if arg else None, **options)
    if kind == "folder":
        from segmenters.folder import FolderProbe
        return FolderProbe(arg, **options)
    raise ProbeError(
        f"unknown probe '{spec}': use broden:DIR, toyworld[:N] or folder:DIR (with --segmenter)"
    )
