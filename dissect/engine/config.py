"""What defines a dissection: the options stored in run.json["config"], and their hash.

    cfg = DissectConfig(model="resnet18", weights="none", layers=["layer4"], probe="toyworld:200")
    cfg.identity()      # sha1 of the options that change results (a resumed run must match)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

DENOMINATORS = ("nd", "netdissect-lite", "global")


@dataclass
class DissectConfig:
    """Everything that defines a run (stored in run.json["config"])."""
    model: str = "resnet18"
    weights: str | None = None        # None: the model's trained weights; "none": random init
    layers: list[str] = field(default_factory=lambda: ["layer4"])
    probe: str = "toyworld"
    probe_options: dict = field(default_factory=dict)   # categories, split, limit, seed, segmenter
    quantile: float = 0.005
    denominator: str = "nd"
    batch_size: int = 32
    workers: int = 1
    device: str = "cpu"
    seed: int = 0
    topk: int = 20
    iou_threshold: float = 0.04
    classes: str | None = None
    cache_dtype: str = "float32"      # float32 (exact) or float16
    cache: str = "disk"               # disk (memmap, resumable) or ram
    keep_acts: bool = True            # keep the cache as layers/<layer>/acts.npy (its dtype)
    bins: int = 64
    tally_threads: int = 1            # CPU threads in phase 2 (many small ops: 1 is fastest
                                      # on small machines; 0 = leave torch's setting)
    null: int = 0                     # --null B: permutation/roll nulls and bootstrap (dissect.trust.per_image)
    heldout: str = "auto"             # --heldout auto|split|random (dissect.probes.splits)
    baseline: str = ""                # --baseline rotation|random-init (dissect.trust.baselines)
    layout: str = "auto"              # --layout auto|nchw|nhwc|tokens (dissect.models.layout)
    grid: str | None = None           # --grid HxW: a token layer's patch grid
    prefix: int | None = None         # --prefix P: leading class/register tokens
    include_prefix: bool = False      # --include-prefix: edits also change the prefix tokens

    def __post_init__(self) -> None:
        from dissect.models.registry import resolve_weights
        self.weights = resolve_weights(self.model, self.weights)   # None -> trained weights

    def identity(self) -> str:
        """Hash of the options that change results (not batch size, workers, device)."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("batch_size", "workers", "device", "keep_acts", "cache",
                             "tally_threads")}
        for k, v in LAYOUT_DEFAULTS.items():    # runs from before layouts keep their identity
            if keep.get(k) == v:
                keep.pop(k)
        return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


LAYOUT_DEFAULTS = {"layout": "auto", "grid": None, "prefix": None, "include_prefix": False}


def cfg_layout(cfg):
    """The dissect.models.layout.Layout a config (DissectConfig or run.json's dict) asks for."""
    from dissect.models.layout import layout_from
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    return layout_from(get("layout") or "auto", get("grid"), get("prefix"),
                       bool(get("include_prefix")))


def use_cfg_layout(lm, cfg) -> None:
    """Read `lm`'s layers in the layout `cfg` asks for (every capture/intervene on lm.model)."""
    from dissect.models.layout import set_layout
    set_layout(lm.model, cfg_layout(cfg))
