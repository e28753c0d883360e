"""One layer's state during a dissection: its activation cache and streaming statistics.

    shapes = layer_shapes(lm, probe, ["layer3", "layer4"])   # {"layer4": (512, 7, 7)}; LayerError
    L = LayerState("layer4", shapes["layer4"], len(probe), cfg, cache_dir)
    L.quant, L.top, L.minmax          # phase-1 statistics; L.tally, L.hist, L.trust in phase 2
    concepts, categories, lut, concept_cat = concept_tables(probe)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dissect.engine.act_cache import ActCache, npy_header
from dissect.engine.config import DissectConfig
from dissect.engine.stats import Histogram, IoUTally, MinMax, TailQuantile, TopK
from dissect.errors import LayerError
from dissect.models.hooks import capture, get_layer
from dissect.probes.types import ProbeSet
from dissect.runs.atomic import reserve
from dissect.trust.per_image import PerImageStats


class LayerState:
    """Per-layer cache and statistics."""

    def __init__(self, name: str, shape: tuple[int, int, int], n: int, cfg: DissectConfig,
                 cache_dir: Path | None):
        self.name, self.shape = name, shape
        k, h, w = shape
        dtype = np.float16 if cfg.cache_dtype == "float16" else np.float32
        self.fresh = True              # a cache file was (re)created now: no checkpoint fits
        self.files: list[Path] = []
        if cache_dir is None:
            self.cache = np.zeros((n, k, h, w), dtype)
            self.imgmax = np.zeros((n, k), np.float32)
        else:
            self.files = [cache_dir / f"{name}.acts.npy", cache_dir / f"{name}.imgmax.npy"]
            self.cache, fresh_a = open_cache(self.files[0], dtype, (n, k, h, w), rows=True)
            self.imgmax, fresh_m = open_cache(self.files[1], np.float32, (n, k))
            self.fresh = fresh_a or fresh_m
        self.quant = TailQuantile(k, cfg.quantile, n * h * w)
        self.minmax = MinMax(k)
        self.top = TopK(k, cfg.topk)
        self.tally: IoUTally | None = None
        self.hist: Histogram | None = None
        self.trust: PerImageStats | None = None     # per-image statistics (phase 2)

    def identity(self) -> dict:
        """What the checkpoint trusts: each cache file's device, inode and size."""
        return {f.name: file_identity(f) for f in self.files}

    def stats(self, phase: int) -> dict:
        if phase == 1:
            return {"quant": self.quant.state_dict(), "minmax": self.minmax.state_dict(),
                    "top": self.top.state_dict()}
        out = {"tally": self.tally.state_dict(), "hist": self.hist.state_dict()}
        if self.trust is not None:
            out["trust"] = self.trust.state_dict()
        return out

    def load(self, state: dict) -> None:
        for key, value in state.items():
            getattr(self, key).load_state_dict(value)

    def topk_maps(self, start: int = 0) -> np.ndarray:
        """[K, k, h, w] in the cache's dtype: each unit's raw map on each of its top images
        (cache rows start at image `start`), exactly the values the engine thresholded."""
        idx = self.top.indices.numpy().astype(np.int64) - start
        maps = np.zeros(idx.shape + self.shape[1:], self.cache.dtype)
        for u in range(idx.shape[0]):
            maps[u] = self.cache[idx[u], u]
        return maps

    def start_phase2(self, n_concepts: int, n_categories: int, bins: int) -> None:
        """Fresh phase-2 statistics (histogram edges from the phase-1 min/max)."""
        self.tally = IoUTally(self.shape[0], n_concepts, n_categories)
        self.hist = Histogram.from_range(self.minmax.min, self.minmax.max, bins)

    def flush(self) -> None:
        for a in (self.cache, self.imgmax):
            if isinstance(a, np.memmap):
                a.flush()


def open_cache(path: Path, dtype, shape: tuple[int, ...],
               rows: bool = False) -> tuple[np.memmap | ActCache, bool]:
    """The on-disk cache array at `path` (reused when its header and size fit, else created),
    with its blocks reserved; returns (array, created_now). `rows=True`: an ActCache (read and
    written by pread/pwrite, so resident memory stays flat), else a memory map."""
    want = np.dtype(dtype)
    if path.exists():
        if npy_fits(path, want, tuple(shape)):
            reserve(path)                        # a sparse file from a full disk: fill it now
            return (ActCache.open(path) if rows
                    else np.lib.format.open_memmap(path, mode="r+")), False
        path.unlink()                            # truncated / other shape: start it again
    if rows:
        return ActCache.create(path, want, tuple(shape)), True
    a = np.lib.format.open_memmap(path, mode="w+", dtype=want, shape=tuple(shape))
    reserve(path)
    return a, True


def npy_fits(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    """Whether `path` is a whole .npy of this dtype and shape (header and size; no data read)."""
    try:
        shp, fortran, dt, offset = npy_header(path)
    except (ValueError, OSError, EOFError):
        return False
    return (tuple(shp) == shape and dt == dtype and not fortran
            and path.stat().st_size == offset + int(np.prod(shape)) * dtype.itemsize)


def file_identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size]


def layer_shapes(lm, probe: ProbeSet, layers: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    for name in layers:
        get_layer(lm.model, name)            # LayerNotFound with close names
    item = probe[0]
    x = lm.normalize(item.image[None].to(lm.device))
    with torch.inference_mode(), capture(lm.model, list(layers)) as acts:
        lm.model(x)
    shapes = {}
    for name in layers:
        if name not in acts:
            raise LayerError(f"layer '{name}' did not run in the forward pass; pick a layer "
                             "that `python -m dissect layers` lists with a shape")
        t = acts[name]
        if t.dim() == 3:                     # tokens the layout could not read: say why
            from dissect.models.layout import resolve
            resolve(t, lm.model, name=name)
        if t.dim() != 4:
            raise LayerError(
                f"layer '{name}' has output shape {list(t.shape[1:])}, not K×h×w: it has no "
                "spatial map to dissect. Pick a convolutional layer (`python -m dissect layers "
                "--model ...` marks them 'dissectable')")
        if t.shape[2] * t.shape[3] == 1:
            raise LayerError(
                f"layer '{name}' has output shape {list(t.shape[1:])}: a 1×1 map has no spatial "
                "extent to compare with concept masks. Pick an earlier convolutional layer "
                "(`python -m dissect layers --model ...` lists them)")
        shapes[name] = tuple(t.shape[1:])
    return shapes


def concept_tables(probe: ProbeSet):
    concepts = probe.concepts.reset_index(drop=True)
    cats = list(probe.categories)
    ids = concepts["concept"].to_numpy(np.int64)
    lut = torch.full((int(ids.max()) + 1 if len(ids) else 1,), -1, dtype=torch.long)
    lut[torch.from_numpy(ids.copy())] = torch.arange(len(ids))
    cc = torch.tensor([cats.index(c) for c in concepts["category"]], dtype=torch.long)
    return concepts, cats, lut, cc
