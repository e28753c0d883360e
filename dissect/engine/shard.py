"""One shard of a distributed dissection: the worker side of dissect.engine.distributed.

    spec = ShardSpec(cfg=asdict(cfg), shard=0, rows=(0, 512), images=2000, ...)
    r1 = forward_shard(spec)                 # phase 1 on rows: statistics, activations kept
    r2 = tally_shard(spec, thresholds, edges)  # phase 2 on the same rows: tallies, histograms

Both are plain functions (dissect.engine.distributed wraps them in Ray tasks). The shard's raw
activations stay on the node that computed them, in a memmap under
`$DISSECT_SHARD_DIR` (default: the system temp folder); only statistics are returned. A
tally shard that finds no complete local cache (it was scheduled on another node, or the node
lost it) runs the forward pass again: activations are deterministic, so the tallies are the
same. Every shard starts its statistics from zero, so a retried shard counts nothing twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dissect.errors import USER_ERRORS, RunError
from dissect.engine.act_cache import ActCache
from dissect.engine.stats import TailQuantile


class ShardError(RunError):
    """A shard failed on a worker; the message names the node and the cause."""


@dataclass
class ShardSpec:
    """What a shard task needs: the run's config, its image rows and where things live."""
    cfg: dict                        # DissectConfig as a dict
    shard: int
    rows: tuple[int, int]            # images [lo, hi) of the probe
    images: int                      # images in the whole run (TailQuantile's total)
    key: str                         # names this run's node-local caches
    fingerprint: str                 # of the driver's probe tables: workers must see the same
    threads: int = 1
    acts_dir: str | None = None      # the run's cache folder, when acts.npy is kept
    token: str = ""                  # written there by the driver: proves the folder is shared
    pause: float = 0.0               # seconds per batch (fault-injection tests only)


def node_name() -> str:
    """'host (ip)' of this process, for error messages."""
    host = socket.gethostname()
    try:
        import ray
        ip = ray.util.get_node_ip_address()
    except Exception:   # no Ray here
        ip = "?"
    return f"{host} ({ip})"


def probe_fingerprint(probe) -> str:
    """A hash of the probe's image paths and concept table (what shards must agree on)."""
    h = hashlib.sha1()
    h.update("\n".join(map(str, probe.images["path"])).encode())
    h.update(probe.concepts[["concept", "name", "category"]].to_csv(index=False).encode())
    return h.hexdigest()


def shard_dir(spec: ShardSpec) -> Path:
    root = Path(os.environ.get("DISSECT_SHARD_DIR") or tempfile.gettempdir())
    return root / "dissect-shards" / f"{spec.key}-{spec.rows[0]}-{spec.rows[1]}"


class _Reporter:
    """The RunWriter stand-in a shard's _PhaseProgress talks to: forwards to the driver's board."""

    def __init__(self, board, spec: ShardSpec, every: float = 0.5):
        self.board, self.spec, self.every, self.last = board, spec, every, 0.0
        self.pause = spec.pause

    def event(self, **info) -> None:
        if self.board is not None:
            self.board.report.remote(self.spec.shard, info)

    def progress(self, phase: str, done: int, total: int, force: bool = False) -> None:
        if self.pause:
            time.sleep(self.pause)
        t = time.monotonic()
        if force or t - self.last >= self.every:
            self.last = t
            self.event(phase=phase, done=int(done), total=int(total))


def _config(spec: ShardSpec):
    from dissect.engine.config import DissectConfig
    cfg = DissectConfig(**spec.cfg)
    if cfg.device.startswith("cuda:"):   # Ray gives each GPU task its own device as cuda:0
        cfg.device = "cuda"
    return cfg


def _open(spec: ShardSpec, cfg):
    """The probe on this node, checked against the driver's."""
    from dissect.engine.dissection import open_cfg_probe
    try:
        probe = open_cfg_probe(cfg)
    except USER_ERRORS as e:
        raise ShardError(f"shard {spec.shard} on node {node_name()}: cannot open probe "
                         f"'{cfg.probe}' ({e}); put the probe set at the same path on every "
                         "node (shared storage, or a copy)") from None
    if probe_fingerprint(probe) != spec.fingerprint:
        raise ShardError(f"shard {spec.shard} on node {node_name()}: probe '{cfg.probe}' there "
                         f"differs from the driver's ({len(probe)} images); copy the same probe "
                         "set to every node")
    return probe


def _layers(spec: ShardSpec, cfg, probe, model, folder: Path) -> dict:
    from dissect.engine.layer_state import LayerState, layer_shapes
    shapes = layer_shapes(model, probe, cfg.layers)
    lo, hi = spec.rows
    layers = {}
    for name, shape in shapes.items():
        L = LayerState(name, shape, hi - lo, cfg, folder)
        k, h, w = shape
        L.quant = TailQuantile(k, cfg.quantile, spec.images * h * w)   # the run's total
        layers[name] = L
    return layers


def _forward(spec: ShardSpec, cfg, probe, rep: _Reporter) -> tuple[dict, Path]:
    """Phase 1 over the shard's rows into a fresh node-local cache; (layers, folder)."""
    from dissect.engine.phases import phase1
    from dissect.models.registry import load_model
    folder = shard_dir(spec)
    shutil.rmtree(folder, ignore_errors=True)        # a half-written earlier attempt
    folder.mkdir(parents=True)
    torch.manual_seed(cfg.seed)
    lm = load_model(cfg.model, cfg.weights, classes=cfg.classes, device=cfg.device,
                    seed=cfg.seed)
    from dissect.engine.config import use_cfg_layout
    use_cfg_layout(lm, cfg)
    layers = _layers(spec, cfg, probe, lm, folder)
    phase1(cfg, lm, probe, layers, rep, 0, None, False, rows=range(*spec.rows))
    for L in layers.values():
        L.flush()
    (folder / "forward.json").write_text(json.dumps({"key": spec.key, "rows": spec.rows}))
    return layers, folder


def _guard(spec: ShardSpec, run):
    """Run `run()` with torch threads set, user errors named by node and shard."""
    torch.set_num_threads(max(1, spec.threads))
    try:
        return run()
    except ShardError:
        raise
    except USER_ERRORS as e:
        raise ShardError(f"shard {spec.shard} on node {node_name()}: {e}") from None


def forward_shard(spec: ShardSpec, board=None) -> dict:
    """Phase 1 of one shard: its statistics (quantile tails, min/max, top-k with their maps,
    per-image maxima); the activations stay in the node-local cache for `tally_shard`."""
    rep = _Reporter(board, spec)

    def run():
        t0 = time.perf_counter()
        rep.event(phase="start", round=1, pid=os.getpid(), node=node_name(),
                  node_id=_node_id())
        cfg = _config(spec)
        probe = _open(spec, cfg)
        layers, _ = _forward(spec, cfg, probe, rep)
        out = {"shard": spec.shard, "node_id": _node_id(), "node": node_name(), "layers": {}}
        for name, L in layers.items():
            out["layers"][name] = {
                **L.stats(1),
                "imgmax": torch.from_numpy(np.array(L.imgmax, dtype=np.float32)),
                "maps": torch.from_numpy(L.topk_maps(spec.rows[0])),
            }
            del L.cache, L.imgmax
        out["seconds"] = round(time.perf_counter() - t0, 3)
        rep.event(phase="forward done")
        return out
    return _guard(spec, run)


def tally_shard(spec: ShardSpec, thresholds: dict, edges: dict, board=None) -> dict:
    """Phase 2 of one shard: IoU tallies and histograms for `thresholds` and histogram `edges`
    (per layer), from the node-local cache (rebuilt by a forward pass when missing). Writes the
    shard's rows of the acts into `spec.acts_dir` when that folder is shared with the
    driver; removes the local cache at the end."""
    rep = _Reporter(board, spec)

    def run():
        from dissect.engine.layer_state import concept_tables, LayerState
        from dissect.engine.phases import phase2
        from dissect.engine.stats import Histogram
        t0 = time.perf_counter()
        rep.event(phase="start", round=2, pid=os.getpid(), node=node_name(),
                  node_id=_node_id())
        cfg = _config(spec)
        probe = _open(spec, cfg)
        folder = shard_dir(spec)
        marker = folder / "forward.json"
        if marker.exists() and json.loads(marker.read_text()).get("key") == spec.key:
            lo, hi = spec.rows
            layers = {}
            for name in cfg.layers:
                k, h, w = np.load(folder / f"{name}.acts.npy", mmap_mode="r").shape[1:]
                layers[name] = LayerState(name, (k, h, w), hi - lo, cfg, folder)
        else:
            rep.event(phase="re-forward")
            layers, folder = _forward(spec, cfg, probe, rep)
        concepts, cats, lut, cc = concept_tables(probe)
        for name, L in layers.items():
            L.start_phase2(len(concepts), len(cats), cfg.bins)
            L.hist = Histogram(edges[name])
        phase2(cfg, probe, layers, thresholds, lut, cc, len(cats), rep, 0, None, False,
                rows=range(*spec.rows))
        wrote = _write_acts(spec, layers)
        out = {"shard": spec.shard, "node": node_name(), "acts_written": wrote,
               "layers": {name: L.stats(2) for name, L in layers.items()}}
        for L in layers.values():
            del L.cache, L.imgmax
        shutil.rmtree(folder, ignore_errors=True)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        rep.event(phase="tally done")
        return out
    return _guard(spec, run)


def _write_acts(spec: ShardSpec, layers: dict) -> bool:
    """The shard's rows into the driver's acts files, when this node sees them."""
    if not spec.acts_dir:
        return False
    folder = Path(spec.acts_dir)
    token = folder / "shared-token"
    try:
        if token.read_text() != spec.token:
            return False
    except OSError:
        return False                        # not shared with the driver: activations stay here
    lo, hi = spec.rows
    for name, L in layers.items():
        acts = ActCache.open(folder / f"{name}.acts.npy")
        for i in range(0, hi - lo, 256):
            acts[lo + i:lo + min(i + 256, hi - lo)] = L.cache[i:i + 256]
        acts.close()
    return True


def _node_id() -> str | None:
    try:
        import ray
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None
