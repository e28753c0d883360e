"""Which concepts each image of a ToyWorld (Broden-format) labelled set shows, from its masks.

    has = concept_presence(lset, ["sun", "sea"])      # {"sun": bool [N], "sea": bool [N]}
    sub = select(lset, require=["sea", "boat"], exclude=["sun"])   # a smaller LabelledSet

Only sets whose source is a Broden folder (toyworld:N) carry pixel labels; others get a
DirectionError naming the fix.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from dissect.errors import DirectionError


def _labels_probe(lset):
    from dissect.probes.broden import BrodenProbe
    src = getattr(lset, "source", None)
    if src is None or not hasattr(src, "directory"):
        raise DirectionError(f"set '{lset.spec}' has no concept pixels; concept filters and "
                             "per-concept readout need a ToyWorld set (toyworld:N)")
    return BrodenProbe(src.directory)


def concept_presence(lset, concepts: Sequence[str]) -> dict[str, np.ndarray]:
    """{concept: bool [len(lset)]}: the image has a pixel (or image-level label) of it."""
    from dissect.directions.concept import concept_id
    probe = _labels_probe(lset)
    ids = {c: concept_id(probe, c) for c in concepts}
    cats = {str(probe.concepts.set_index("concept").at[i, "category"]) for i in ids.values()}
    probe.categories = [c for c in probe.categories if c in cats]
    probe.decode_images = False
    row_of = {p: i for i, p in enumerate(probe.images["path"].astype(str))}
    out = {c: np.zeros(len(lset), bool) for c in concepts}
    for j, path in enumerate(lset.paths):
        i = row_of.get(str(path))
        if i is None:
            continue
        item = probe[i]
        present = set()
        for planes in list(item.pixel.values()) + list(item.scalar.values()):
            present |= set(np.unique(planes).tolist())
        for c, cid in ids.items():
            out[c][j] = cid in present
    return out


def subset(lset, keep: np.ndarray):
    """A LabelledSet of the images where `keep` is True (same order)."""
    idx = np.flatnonzero(keep)
    load = lset.load
    return replace(lset, labels=lset.labels[idx], paths=[lset.paths[i] for i in idx],
                   load=lambda j: load(int(idx[j])), notes=list(lset.notes))


def select(lset, require: Sequence[str] = (), exclude: Sequence[str] = ()):
    """The images that show every `require` concept and no `exclude` one."""
    if not require and not exclude:
        return lset
    has = concept_presence(lset, list(require) + list(exclude))
    keep = np.ones(len(lset), bool)
    for c in require:
        keep &= has[c]
    for c in exclude:
        keep &= ~has[c]
    if not keep.any():
        raise DirectionError(f"no image of '{lset.spec}' shows {', '.join(require) or 'anything'}"
                             + (f" without {', '.join(exclude)}" if exclude else "")
                             + "; use a larger set or fewer conditions")
    return subset(lset, keep)
