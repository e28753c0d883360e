"""Segmenters: concept labels for any image, in the batch type the Broden reader yields.

    available_segmenters()                 # {"color": "11 basic colour terms ...", ...}
    seg = make_segmenter("color,ade20k")   # a MergedSegmenter when more than one
    seg = make_segmenter("ade20k:/models/upernet", device="cuda")

Spec: comma-separated names, each optionally `name:ARG` — `color` (alias colour), `ade20k[:MODEL]`
(a save_pretrained folder or a Hugging Face id already in the local cache), `broden:DIR` and
`toyworld[:DIR|:N]` (ground truth by image path; N: the cached world of N images). The folder probe (`--probe folder:DIR
--segmenter SPEC`) is segmenters.folder.FolderProbe.
"""
from __future__ import annotations

from segmenters.base import Segmentation, Segmenter, SegmenterError

_DESCRIPTIONS = {
    "color": "11 basic colour terms per pixel (black, blue, brown, grey, green, orange, pink, "
             "purple, red, white, yellow); no weights, any photo",
    "ade20k": "ADE20K objects (150 classes) by UPerNet-ConvNeXt; needs the weights in the local "
              "Hugging Face cache or a save_pretrained folder (ade20k:PATH)",
    "broden": "ground truth of a Broden-format folder (broden:DIR), images matched by path",
    "toyworld": "ToyWorld ground truth (toyworld:DIR, toyworld:N for the cached world of N "
                "images, or the default world)",
}
_ALIASES = {"colour": "color", "colors": "color", "colours": "color"}


def available_segmenters() -> dict[str, str]:
    """Registry names -> one-line descriptions (for the CLI help and the New-run page)."""
    return dict(_DESCRIPTIONS)


def make_one(spec: str, *, device: str = "cpu", categories=None, seed: int = 0,
             cache_dir: str | None = None, **_ignored) -> Segmenter:
    """One segmenter from `name[:ARG]`."""
    name, _, arg = spec.strip().partition(":")
    name = _ALIASES.get(name.lower(), name.lower())
    if name == "color":
        from segmenters.color import ColorNamer
        return ColorNamer()
    if name == "ade20k":
        from segmenters.ade20k import ADE20KSegmenter
        return ADE20KSegmenter(arg or None, device=device)
    if name == "broden":
        if not arg:
            raise SegmenterError("the broden segmenter needs its folder: --segmenter broden:DIR")
        from segmenters.groundtruth import BrodenGroundTruth
        return BrodenGroundTruth(arg, categories=categories)
    if name == "toyworld":
        from segmenters.groundtruth import toyworld_ground_truth
        if arg.isdigit():   # toyworld:N, the cached world of N images (built once)
            return toyworld_ground_truth(n=int(arg), seed=seed, cache_dir=cache_dir)
        return toyworld_ground_truth(arg or None, seed=seed, cache_dir=cache_dir)
    raise SegmenterError(f"unknown segmenter '{spec}'; choose from: "
                         f"{', '.join(_DESCRIPTIONS)} (comma-separated, e.g. color,ade20k)")


def make_segmenter(spec: str, **options) -> Segmenter:
    """Build `spec` ("color", "color,ade20k", "ade20k:PATH", ...); options: device, categories,
    seed, cache_dir. Several names give a MergedSegmenter whose concept ids never collide."""
    from segmenters.merged import MergedSegmenter
    parts = [s for s in (spec or "").split(",") if s.strip()]
    if not parts:
        raise SegmenterError("no segmenter given; use --segmenter with one or more of: "
                             f"{', '.join(_DESCRIPTIONS)}")
    segs = [make_one(p, **options) for p in parts]
    return segs[0] if len(segs) == 1 else MergedSegmenter(segs)


__all__ = ["Segmentation", "Segmenter", "SegmenterError", "available_segmenters",
           "make_segmenter"]
