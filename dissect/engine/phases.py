"""The two phases of a dissection over a range of images, with checkpoints and progress.

    phase1(cfg, lm, probe, layers, writer, done, ckpt, progress)   # forward: cache, thresholds, top-k
    phase2(cfg, probe, layers, thresholds, lut, cc, n_cats, writer, done, ckpt, progress)  # tally
    done = resume(ckpt, cfg, layers, n)        # images a checkpoint covers (0: start the phase)

Phase 1 runs the model once per image (all layers in one pass, stopping after the last one),
caches raw activations and streams exact thresholds, per-image maxima, top-k images and min/max.
Phase 2 reads the cache back with each image's labels (decoded in DataLoader workers, images
skipped) and tallies intersections and unions (dissect.engine.tally). Both phases checkpoint their
statistics every CHECKPOINT_EVERY seconds, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import copy
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from dissect.engine.layer_state import LayerState
from dissect.engine.tally import BatchLabels, tally_batch
from dissect.errors import ProbeError
from dissect.models.hooks import capture, stopped_forward
from dissect.probes.types import probe_loader
from dissect.probes.types import ProbeSet
from dissect.runs.atomic import write_torch
from dissect.trust.per_image import PerImageStats

CHECKPOINT_EVERY = 30.0   # seconds between statistic checkpoints


def clean_worker_error(e: Exception) -> Exception:
    """A ProbeError raised in a DataLoader worker comes back wrapped in a traceback; unwrap it."""
    text = str(e)
    if "Original Traceback" in text:
        for line in reversed(text.strip().splitlines()):
            if "Error: " in line:
                return ProbeError(line.split("Error: ", 1)[1])
    return e


def batches(loader) -> Iterator:
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except ProbeError as e:
            raise clean_worker_error(e) from None
        yield batch


def checkpoint(path: Path | None, cfg, done: int, layers: dict, phase: int) -> None:
    """Save a phase's statistics with the identity of the cache files they go with."""
    if path is None:
        return
    for L in layers.values():
        L.flush()
    state = {"identity": cfg.identity(), "done": done,
             "cache": {name: L.identity() for name, L in layers.items()},
             "layers": {name: L.stats(phase) for name, L in layers.items()}}
    write_torch(path, state)


def resume(path: Path | None, cfg, layers: dict, n: int) -> int:
    """Images a phase checkpoint covers (its statistics loaded into `layers`), or 0 when there
    is none or it does not fit: another config, other cache files, or not a plain checkpoint
    (loaded with weights_only=True, so a crafted file cannot run code)."""
    if path is None or not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        done = state["done"]
        fits = (state.get("identity") == cfg.identity() and isinstance(done, int)
                and 0 <= done <= n and set(state["layers"]) == set(layers)
                and state.get("cache") == {k: L.identity() for k, L in layers.items()})
        if not fits:
            return 0
        before = {name: {k: copy.deepcopy(getattr(layers[name], k)) for k in st}
                  for name, st in state["layers"].items()}
        try:
            for name, st in state["layers"].items():
                layers[name].load(st)
        except Exception:
            for name, saved in before.items():   # a partial load must not leak into the rerun
                layers[name].__dict__.update(saved)
            raise
        return done
    except Exception as e:   # unpickling refused, truncated file, wrong keys: start the phase again
        print(f"note: {path.name} cannot be used ({type(e).__name__}); that phase starts again",
              file=sys.stderr)
    return 0


class PhaseProgress:
    """One phase's tqdm bar, run.json progress and periodic statistic checkpoints."""

    def __init__(self, name: str, phase: int, n: int, done: int, cfg, layers: dict, writer,
                 ckpt, progress: bool):
        self.name, self.phase, self.n, self.done = name, phase, n, done
        self.cfg, self.layers, self.writer, self.ckpt = cfg, layers, writer, ckpt
        self.bar = tqdm(total=n, initial=done, unit="img", desc=name, disable=not progress,
                        dynamic_ncols=True)
        self.last = time.monotonic()

    def step(self, images: int) -> None:
        self.done += images
        self.bar.update(images)
        self.writer.progress(self.name, self.done, self.n)
        if time.monotonic() - self.last > CHECKPOINT_EVERY and self.done < self.n:
            checkpoint(self.ckpt, self.cfg, self.done, self.layers, self.phase)
            self.last = time.monotonic()

    def finish(self) -> None:
        self.bar.close()
        checkpoint(self.ckpt, self.cfg, self.done, self.layers, self.phase)
        self.writer.progress(self.name, self.done, self.n, force=True)


def remaining(probe: ProbeSet, done: int, cfg, rows: range | None = None):
    """A loader over the images of `rows` (default: all) a phase has not processed yet
    (resume), in probe order."""
    rows = range(len(probe)) if rows is None else rows
    todo = rows[done:]
    return probe_loader(probe if todo == range(len(probe)) else Subset(probe, todo),
                        cfg.batch_size, cfg.workers)


def phase1(cfg, lm, probe, layers: dict, writer, done: int, ckpt, progress: bool,
            rows: range | None = None) -> None:
    """Forward `rows` (default: all images; a shard's caches hold only its rows)."""
    rows = range(len(probe)) if rows is None else rows
    n, start = len(rows), rows.start
    names = list(layers)
    loader = remaining(image_view(probe), done, cfg, rows)
    track = PhaseProgress("forward", 1, n, done, cfg, layers, writer, ckpt, progress)
    with torch.inference_mode():
        for batch in batches(loader):
            x = lm.normalize(batch.images.to(lm.device, non_blocking=True))
            with capture(lm.model, names, stop_after=True) as acts:
                stopped_forward(lm.model, x)
            idx = batch.index.numpy() - start
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            contiguous = hi - lo == len(idx)
            with torch_threads(1):            # small statistic ops: threads only add overhead
                for name, L in layers.items():
                    record_batch(L, acts[name], batch.index, idx, lo, hi, contiguous)
            track.step(len(idx))
    track.finish()


@contextmanager
def torch_threads(n: int):
    """Temporarily use `n` torch CPU threads (0: leave as is)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def record_batch(L: LayerState, out: torch.Tensor, index: torch.Tensor, idx: np.ndarray, lo: int,
            hi: int, contiguous: bool) -> None:
    """Phase-1 bookkeeping for one layer and batch: statistics and the activation cache."""
    a = out.float()
    if L.cache.dtype == np.float16:     # statistics see what the cache holds
        a = a.half().float()
    L.quant.add(a)
    L.minmax.add(a)
    m = a.amax(dim=(2, 3))
    L.top.add(m, index)
    a_np, m_np = a.cpu().numpy(), m.cpu().numpy()
    if contiguous:
        L.cache[lo:hi] = a_np
        L.imgmax[lo:hi] = m_np
    else:
        L.cache[idx] = a_np
        L.imgmax[idx] = m_np


def label_view(probe: ProbeSet) -> ProbeSet:
    """The probe without image decoding (phase 2)."""
    probe = copy.copy(probe)
    probe.decode_images = False
    return probe


def image_view(probe: ProbeSet) -> ProbeSet:
    """The probe without label decoding (phase 1)."""
    probe = copy.copy(probe)
    probe.decode_labels = False
    return probe


def phase2(cfg, probe, layers: dict, thresholds: dict, lut, cc, n_cats: int, writer,
            done: int, ckpt, progress: bool, rows: range | None = None) -> None:
    rows = range(len(probe)) if rows is None else rows
    n, start = len(rows), rows.start
    loader = remaining(label_view(probe), done, cfg, rows)
    dev = torch.device(cfg.device)
    cc_dev = cc.to(dev)
    th_dev = {k: v.to(dev) for k, v in thresholds.items()}
    track = PhaseProgress("tally", 2, n, done, cfg, layers, writer, ckpt, progress)
    for L in layers.values():          # shards start here (global image indices)
        if L.trust is None:
            L.trust = PerImageStats.for_layer(cfg, probe, L.shape, len(cc), n_cats)
    with torch_threads(cfg.tally_threads if dev.type == "cpu" else 0), torch.inference_mode():
        for batch in batches(loader):
            labels = BatchLabels.from_batch(batch, lut, probe.mask_size)
            idx = batch.index.numpy() - start
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            for name, L in layers.items():
                raw = L.cache[lo:hi] if hi - lo == len(idx) else L.cache[idx]
                a = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
                L.hist.add(a)
                inc = tally_batch(a.to(dev), th_dev[name], labels, cc_dev, n_cats, detail=True)
                L.tally.add(inc)
                L.trust.add(inc, labels, batch.index)
            track.step(len(idx))
    track.finish()
