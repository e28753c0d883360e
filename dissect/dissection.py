"""The two-phase dissection pass that fills a run folder.

    cfg = DissectConfig(model="resnet18", weights="none", layers=["layer3", "layer4"],
                        probe="broden:/data/broden1_224")
    dissect(cfg, "runs/r18")          # resumes when runs/r18 holds the same, unfinished run

Phase 1 runs the model once per image (all layers in one pass, stopping after the last one),
caches raw activations (fp32 by default, in an on-disk memmap under <run>/cache), and
streams exact thresholds, per-image maxima, top-k images and min/max. Phase 2 reads the
cache back with each image's labels (decoded again in DataLoader workers, images skipped)
and tallies intersections and unions (dissect.tally). Both phases checkpoint their
statistics, so an interrupted run resumes where it stopped. Semantics: ../shared/DESIGN.md.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from dissect.errors import LayerError, RunError
from dissect.hooks import capture, get_layer, stopped_forward
from dissect.lock import LOCK, run_lock
from dissect.probe import ProbeError, ProbeSet, open_probe, probe_loader
from dissect.runs import RunWriter, read_info, reserve, write_torch
from dissect.stats import Histogram, IoUTally, MinMax, TailQuantile, TopK
from dissect.tally import BatchLabels, tally_batch
from dissect.trust import PerImageStats

DENOMINATORS = ("nd", "netdissect-lite", "global")
CHECKPOINT_EVERY = 30.0   # seconds between statistic checkpoints


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
    keep_acts: bool = True            # write layers/<layer>/acts.npy (float16) for the app
    bins: int = 64
    tally_threads: int = 1            # CPU threads in phase 2 (many small ops: 1 is fastest
                                      # on small machines; 0 = leave torch's setting)
    null: int = 0                     # --null B: permutation/roll nulls and bootstrap (dissect.trust)
    heldout: str = "auto"             # --heldout auto|split|random (dissect.splits)
    baseline: str = ""                # --baseline rotation|random-init (dissect.baselines)
    layout: str = "auto"              # --layout auto|nchw|nhwc|tokens (dissect.layout)
    grid: str | None = None           # --grid HxW: a token layer's patch grid
    prefix: int | None = None         # --prefix P: leading class/register tokens
    include_prefix: bool = False      # --include-prefix: edits also change the prefix tokens

    def __post_init__(self) -> None:
        from dissect.models import resolve_weights
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
    """The dissect.layout.Layout a config (DissectConfig or run.json's dict) asks for."""
    from dissect.layout import layout_from
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    return layout_from(get("layout") or "auto", get("grid"), get("prefix"),
                       bool(get("include_prefix")))


def use_cfg_layout(lm, cfg) -> None:
    """Read `lm`'s layers in the layout `cfg` asks for (every capture/intervene on lm.model)."""
    from dissect.layout import set_layout
    set_layout(lm.model, cfg_layout(cfg))


def _versions() -> dict:
    import torchvision
    from dissect import __version__
    return {"dissect": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def _clean_worker_error(e: Exception) -> Exception:
    """A ProbeError raised in a DataLoader worker comes back wrapped in a traceback; unwrap it."""
    text = str(e)
    if "Original Traceback" in text:
        for line in reversed(text.strip().splitlines()):
            if "Error: " in line:
                return ProbeError(line.split("Error: ", 1)[1])
    return e


def _batches(loader) -> Iterator:
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except ProbeError as e:
            raise _clean_worker_error(e) from None
        yield batch


class _Layer:
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
            self.cache, fresh_a = _open_cache(self.files[0], dtype, (n, k, h, w))
            self.imgmax, fresh_m = _open_cache(self.files[1], np.float32, (n, k))
            self.fresh = fresh_a or fresh_m
        self.quant = TailQuantile(k, cfg.quantile, n * h * w)
        self.minmax = MinMax(k)
        self.top = TopK(k, cfg.topk)
        self.tally: IoUTally | None = None
        self.hist: Histogram | None = None
        self.trust: PerImageStats | None = None     # per-image statistics (phase 2)

    def identity(self) -> dict:
        """What the checkpoint trusts: each cache file's device, inode and size."""
        return {f.name: _file_identity(f) for f in self.files}

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
        """float16 [K, k, h, w]: each unit's raw map on each of its top images (cache rows
        start at image `start`)."""
        idx = self.top.indices.numpy().astype(np.int64) - start
        maps = np.zeros(idx.shape + self.shape[1:], np.float16)
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


def _open_cache(path: Path, dtype, shape: tuple[int, ...]) -> tuple[np.memmap, bool]:
    """The on-disk cache array at `path` (reused when its header and size fit, else created),
    with its blocks reserved; returns (array, created_now)."""
    want = np.dtype(dtype)
    if path.exists():
        if _npy_fits(path, want, tuple(shape)):
            reserve(path)                        # a sparse file from a full disk: fill it now
            return np.lib.format.open_memmap(path, mode="r+"), False
        path.unlink()                            # truncated / other shape: start it again
    a = np.lib.format.open_memmap(path, mode="w+", dtype=want, shape=tuple(shape))
    reserve(path)
    return a, True


def _npy_fits(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> bool:
    """Whether `path` is a whole .npy of this dtype and shape (header and size; no data read)."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if major == 1
                    else np.lib.format.read_array_header_2_0)
            shp, fortran, dt = read(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError):
        return False
    return (tuple(shp) == shape and dt == dtype and not fortran
            and path.stat().st_size == offset + int(np.prod(shape)) * dtype.itemsize)


def _file_identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size]


def _layer_shapes(lm, probe: ProbeSet, layers: Sequence[str]) -> dict[str, tuple[int, int, int]]:
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
            from dissect.layout import resolve
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


def _concept_tables(probe: ProbeSet):
    concepts = probe.concepts.reset_index(drop=True)
    cats = list(probe.categories)
    ids = concepts["concept"].to_numpy(np.int64)
    lut = torch.full((int(ids.max()) + 1 if len(ids) else 1,), -1, dtype=torch.long)
    lut[torch.from_numpy(ids.copy())] = torch.arange(len(ids))
    cc = torch.tensor([cats.index(c) for c in concepts["category"]], dtype=torch.long)
    return concepts, cats, lut, cc


def dissect(cfg: DissectConfig, out: str | Path, *, lm=None, probe: ProbeSet | None = None,
            progress: bool = True, overwrite: bool = False) -> Path:
    """Run (or resume) a dissection into the run folder `out`; returns its path.

    `lm` (a LoadedModel) and `probe` override loading from `cfg` (tests, the app).
    Raises RunError when `out` holds a different run (pass overwrite=True to replace it).
    """
    out = Path(out)
    if lm is not None and cfg.weights != lm.weights:   # record the weights actually used
        cfg = replace(cfg, weights=lm.weights)
    with run_lock(out):     # RunLocked (naming pid, host, start) while another run writes here
        return _locked_dissect(cfg, out, lm, probe, progress, overwrite)


def _locked_dissect(cfg: DissectConfig, out: Path, lm, probe, progress: bool,
                    overwrite: bool) -> Path:
    if check_out(cfg, out, overwrite):
        return out
    if probe is None:
        probe = open_cfg_probe(cfg)
    from dissect.trust_columns import check_trust_options
    check_trust_options(cfg, probe.images)
    if lm is None:
        from dissect.models import load_model
        lm = load_model(cfg.model, cfg.weights, classes=cfg.classes, device=cfg.device,
                        seed=cfg.seed)
    use_cfg_layout(lm, cfg)
    shapes = _layer_shapes(lm, probe, cfg.layers)
    writer = new_writer(cfg, out, probe, shapes)
    with recording_failure(writer):
        _run(cfg, out, writer, lm, probe, shapes, progress)
        if cfg.baseline == "random-init":
            from dissect.baselines import random_init_baseline
            random_init_baseline(cfg, out, progress)
    return out


@contextmanager
def recording_failure(writer: RunWriter) -> Iterator[None]:
    """Mark the run cancelled (Ctrl-C) or failed (with a clean message) when the body raises."""
    try:
        yield
    except KeyboardInterrupt:
        writer.fail("interrupted: run the same command again to resume", status="cancelled")
        raise
    except BaseException as e:
        writer.fail(_clean_worker_error(e) if isinstance(e, Exception) else e)
        raise


def check_out(cfg: DissectConfig, out: Path, overwrite: bool) -> bool:
    """True when `out` already holds this run, complete; RunError when it holds another one
    (removed first with `overwrite`). A same, unfinished run is left to resume."""
    if cfg.denominator not in DENOMINATORS:
        raise RunError(f"unknown --denominator '{cfg.denominator}': use "
                       f"{', '.join(DENOMINATORS)}")
    ident = cfg.identity()
    if (out / "run.json").exists():
        try:
            info = read_info(out)
        except RunError:
            info = {}
        same = info.get("identity") == ident
        if same and info.get("status") == "complete" and not overwrite:
            from dissect.damage import require_whole
            require_whole(out)           # RunError naming the damage and the repair command
            return True
        if not same and not overwrite:
            raise RunError(f"{out} holds a different run ({info.get('config', {}).get('model')}"
                           f" on {info.get('config', {}).get('probe')}); pass another --out, or "
                           "--overwrite to replace it")
        if overwrite and not same:
            _clear(out)
    return False


def _clear(out: Path) -> None:
    """Empty a run folder for --overwrite, keeping the lock file this process holds."""
    for p in out.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def open_cfg_probe(cfg: DissectConfig) -> ProbeSet:
    """The probe set `cfg` names, opened with its options."""
    return open_probe(cfg.probe, **{k: v for k, v in cfg.probe_options.items() if v is not None})


def new_writer(cfg: DissectConfig, out: Path, probe: ProbeSet, shapes: dict) -> RunWriter:
    """A RunWriter for `out` with the run's identity and counts in run.json (status running)."""
    writer = RunWriter(out, asdict(cfg), versions=_versions())
    writer.info["identity"] = cfg.identity()
    from dissect.models import run_random_init
    writer.info["random_init"] = run_random_init({"config": asdict(cfg)})   # the app's badge
    writer.info["counts"] = {"images": len(probe), "concepts": len(probe.concepts),
                             "skipped_images": int(getattr(probe, "skipped", 0)),
                             "units": {n: s[0] for n, s in shapes.items()}}
    writer.save()
    return writer


def _run(cfg, out: Path, writer: RunWriter, lm, probe, shapes, progress: bool) -> None:
    n = len(probe)
    cache_dir = out / "cache" if cfg.cache == "disk" else None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    layers = {name: _Layer(name, s, n, cfg, cache_dir) for name, s in shapes.items()}
    concepts, cats, lut, cc = _concept_tables(probe)
    timings = dict(writer.info.get("timings") or {})
    ck1, ck2 = (cache_dir / "phase1.pt", cache_dir / "phase2.pt") if cache_dir else (None, None)

    # ---- phase 1: forward once per image
    t0 = time.perf_counter()
    if any(L.fresh for L in layers.values()):    # checkpoints describe other cache files
        for ck in (ck1, ck2):
            if ck is not None:
                ck.unlink(missing_ok=True)
    done = _resume(ck1, cfg, layers, n)
    if done < n:
        _phase1(cfg, lm, probe, layers, writer, done, ck1, progress)
    timings["forward"] = round(time.perf_counter() - t0, 3)
    thresholds = {name: torch.from_numpy(L.quant.readout()) for name, L in layers.items()}

    # ---- phase 2: tally
    t0 = time.perf_counter()
    for L in layers.values():
        L.start_phase2(len(concepts), len(cats), cfg.bins)
        L.trust = PerImageStats.for_layer(cfg, probe, L.shape, len(concepts), len(cats))
    done = _resume(ck2, cfg, layers, n)
    if done < n:
        _phase2(cfg, probe, layers, thresholds, lut, cc, len(cats), writer, done, ck2, progress)
    timings["tally"] = round(time.perf_counter() - t0, 3)
    if cfg.baseline == "rotation":
        t0 = time.perf_counter()
        from dissect.baselines import rotation_baseline
        rotation_baseline(cfg, probe, layers, concepts, cats, lut, cc, writer)
        timings["baseline"] = round(time.perf_counter() - t0, 3)

    # ---- write
    t0 = time.perf_counter()
    writer.progress("write", 0, len(layers), force=True)
    from dissect.results import write_results
    write_results(writer, cfg, probe, concepts, cats, cc, layers, thresholds)
    timings["write"] = round(time.perf_counter() - t0, 3)
    writer.info["progress"] = {"phase": "write", "done": len(layers), "total": len(layers)}
    writer.finish(timings=timings)
    if cache_dir is not None:
        for L in layers.values():
            del L.cache, L.imgmax
        shutil.rmtree(cache_dir, ignore_errors=True)


def _checkpoint(path: Path | None, cfg, done: int, layers: dict, phase: int) -> None:
    """Save a phase's statistics with the identity of the cache files they go with."""
    if path is None:
        return
    for L in layers.values():
        L.flush()
    state = {"identity": cfg.identity(), "done": done,
             "cache": {name: L.identity() for name, L in layers.items()},
             "layers": {name: L.stats(phase) for name, L in layers.items()}}
    write_torch(path, state)


def _resume(path: Path | None, cfg, layers: dict, n: int) -> int:
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



class _PhaseProgress:
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
            _checkpoint(self.ckpt, self.cfg, self.done, self.layers, self.phase)
            self.last = time.monotonic()

    def finish(self) -> None:
        self.bar.close()
        _checkpoint(self.ckpt, self.cfg, self.done, self.layers, self.phase)
        self.writer.progress(self.name, self.done, self.n, force=True)


def _remaining(probe: ProbeSet, done: int, cfg, rows: range | None = None):
    """A loader over the images of `rows` (default: all) a phase has not processed yet
    (resume), in probe order."""
    rows = range(len(probe)) if rows is None else rows
    todo = rows[done:]
    return probe_loader(probe if todo == range(len(probe)) else Subset(probe, todo),
                        cfg.batch_size, cfg.workers)


def _phase1(cfg, lm, probe, layers: dict, writer, done: int, ckpt, progress: bool,
            rows: range | None = None) -> None:
    """Forward `rows` (default: all images; a shard's caches hold only its rows)."""
    rows = range(len(probe)) if rows is None else rows
    n, start = len(rows), rows.start
    names = list(layers)
    loader = _remaining(_image_view(probe), done, cfg, rows)
    track = _PhaseProgress("forward", 1, n, done, cfg, layers, writer, ckpt, progress)
    with torch.inference_mode():
        for batch in _batches(loader):
            x = lm.normalize(batch.images.to(lm.device, non_blocking=True))
            with capture(lm.model, names, stop_after=True) as acts:
                stopped_forward(lm.model, x)
            idx = batch.index.numpy() - start
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            contiguous = hi - lo == len(idx)
            with _threads(1):            # small statistic ops: threads only add overhead
                for name, L in layers.items():
                    _record(L, acts[name], batch.index, idx, lo, hi, contiguous)
            track.step(len(idx))
    track.finish()


@contextmanager
def _threads(n: int):
    """Temporarily use `n` torch CPU threads (0: leave as is)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _record(L: _Layer, out: torch.Tensor, index: torch.Tensor, idx: np.ndarray, lo: int,
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


def _label_view(probe: ProbeSet) -> ProbeSet:
    """The probe without image decoding (phase 2)."""
    probe = copy.copy(probe)
    probe.decode_images = False
    return probe


def _image_view(probe: ProbeSet) -> ProbeSet:
    """The probe without label decoding (phase 1)."""
    probe = copy.copy(probe)
    probe.decode_labels = False
    return probe


def _phase2(cfg, probe, layers: dict, thresholds: dict, lut, cc, n_cats: int, writer,
            done: int, ckpt, progress: bool, rows: range | None = None) -> None:
    rows = range(len(probe)) if rows is None else rows
    n, start = len(rows), rows.start
    loader = _remaining(_label_view(probe), done, cfg, rows)
    dev = torch.device(cfg.device)
    cc_dev = cc.to(dev)
    th_dev = {k: v.to(dev) for k, v in thresholds.items()}
    track = _PhaseProgress("tally", 2, n, done, cfg, layers, writer, ckpt, progress)
    for L in layers.values():          # shards start here (global image indices)
        if L.trust is None:
            L.trust = PerImageStats.for_layer(cfg, probe, L.shape, len(cc), n_cats)
    with _threads(cfg.tally_threads if dev.type == "cpu" else 0), torch.inference_mode():
        for batch in _batches(loader):
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
