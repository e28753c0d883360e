"""One dissection sharded over Ray tasks, merged to exactly the one-process run folder.

    dissect_ray(cfg, "runs/r18", ray="local:2")         # a local Ray cluster of 2 CPUs
    dissect_ray(cfg, "runs/r18", ray="10.0.0.5:6379")   # a running cluster (`ray start --head`)

The probe images are cut into contiguous shards (whole batches). Round 1: each shard task runs
the forward pass on its images (dissect.engine.shard), keeps the activations on its node's local disk
and returns statistics: each unit's candidate tail for the exact threshold, min/max, top-k with
the maps of its own top images, per-image maxima. The driver merges them (TailQuantile, TopK and
MinMax merge exactly) into the thresholds and histogram edges. Round 2: each shard tallies its
cached activations against those thresholds and returns IoU tallies and histogram counts, which
add up. The run folder is written by the same code as a one-process run, so its files are the
same to the last bit.

Faults: a shard's statistics count only when its task returns, and a task whose worker dies
is retried by Ray from zero (`max_retries`), so nothing is counted twice. Every returned shard
is saved under <run>/cache/shards, so an interrupted run resumes with the shards still to do.
"""
from __future__ import annotations

import copy
import hashlib
import os
import secrets
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dissect.engine.act_cache import ActCache
from dissect.engine.config import DissectConfig
from dissect.engine.layer_state import concept_tables, layer_shapes
from dissect.engine.dissection import (check_out, new_writer, open_cfg_probe, recording_failure,
                                       refuse_foreign)
from dissect.engine.cluster import check_address, import_ray, parse_ray, ray_cluster
from dissect.errors import RunError
from dissect.runs.atomic import atomic_write, write_torch
from dissect.engine.shard import ShardError, ShardSpec, forward_shard, probe_fingerprint, tally_shard
from dissect.engine.shard_board import ShardBoard
from dissect.engine.stats import Histogram, IoUTally, MinMax, TailQuantile, TopK
from dissect.trust.per_image import PerImageStats

MAX_RETRIES = 3              # Ray retries of a shard whose worker process died


def plan_shards(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) image ranges made of whole batches, as even as the batches allow."""
    batches = -(-n // batch_size)
    shards = max(1, min(shards, batches))
    cuts = [round(i * batches / shards) * batch_size for i in range(shards + 1)]
    return [(lo, min(hi, n)) for lo, hi in zip(cuts, cuts[1:]) if lo < min(hi, n)]


class _Merged:
    """A layer assembled from shard statistics: what dissect.engine.results.write_results reads."""

    def __init__(self, name: str, shape, n: int, cfg: DissectConfig):
        k, h, w = shape
        self.name, self.shape = name, tuple(shape)
        self.quant = TailQuantile(k, cfg.quantile, n * h * w)
        self.minmax, self.top = MinMax(k), TopK(k, cfg.topk)
        self.imgmax = np.zeros((n, k), np.float32)
        self.tally = self.hist = None
        self.trust: PerImageStats | None = None    # per-image statistics, merged from shards
        self.cache = None          # an ActCache of the acts, when the shards wrote them
        self._maps: list[tuple[torch.Tensor, torch.Tensor]] = []   # (indices, maps) per shard

    def add_forward(self, rows: tuple[int, int], st: dict) -> None:
        for key in ("quant", "minmax", "top"):
            part = copy.deepcopy(getattr(self, key))
            part.load_state_dict(st[key])
            getattr(self, key).merge(part)
        self.imgmax[rows[0]:rows[1]] = st["imgmax"].numpy()
        self._maps.append((st["top"]["indices"], st["maps"]))

    def add_tally(self, st: dict) -> None:
        for key, value in st.items():
            part = copy.deepcopy(getattr(self, key))
            part.load_state_dict(value)
            getattr(self, key).merge(part)

    def topk_maps(self) -> np.ndarray:
        """[K, k, h, w]: the merged top images' maps, picked from the shards' own (their dtype)."""
        idx = torch.cat([i for i, _ in self._maps], 1)               # K × S
        maps = torch.cat([m for _, m in self._maps], 1)              # K × S × h × w
        final = self.top.indices                                     # K × k
        pos = (final[:, :, None] == idx[:, None, :]).int().argmax(2)  # K × k
        picked = maps.gather(1, pos[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
        return picked.numpy()


def dissect_ray(cfg: DissectConfig, out: str | Path, *, ray: str = "local", shards: int | None
                = None, threads: int = 1, progress: bool = True, overwrite: bool = False,
                on_progress: Callable[[list[dict]], None] | None = None) -> Path:
    """Run (or resume) `cfg` into the run folder `out`, sharded over the Ray cluster `ray`.

    shards: how many (default: the cluster's CPUs // threads); threads: torch threads per
    shard; on_progress(shards): called about every second with each shard's progress.
    The run folder's lock (dissect.runs.lock, as a local run takes it) is held throughout: a second
    writer (`run`, `sweep`, the app) is refused with RunLocked naming this one.
    """
    from dissect.runs.lock import run_lock
    out = Path(out)
    refuse_foreign(out)
    with run_lock(out):
        return _locked_dissect_ray(cfg, out, ray, shards, threads, progress, overwrite,
                                   on_progress)


def _locked_dissect_ray(cfg, out: Path, ray, shards, threads, progress, overwrite,
                        on_progress) -> Path:
    if check_out(cfg, out, overwrite):
        return out
    if cfg.baseline:
        raise RunError(f"--baseline {cfg.baseline} does not run with --ray yet; run the "
                       "baseline without --ray")
    kind, arg = parse_ray(ray)
    if kind == "address" and not import_ray().is_initialized():
        check_address(str(arg))           # fail within seconds, before loading anything
    probe = open_cfg_probe(cfg)
    from dissect.trust.columns import check_trust_options
    check_trust_options(cfg, probe.images)
    from dissect.models.registry import load_model
    lm = load_model(cfg.model, cfg.weights, classes=cfg.classes, device="cpu", seed=cfg.seed)
    from dissect.engine.config import use_cfg_layout
    use_cfg_layout(lm, cfg)
    shapes = layer_shapes(lm, probe, cfg.layers)
    del lm
    with ray_cluster(ray, threads) as cpus:
        writer = new_writer(cfg, out, probe, shapes)
        plan = plan_shards(len(probe), shards or max(1, cpus // max(1, threads)), cfg.batch_size)
        writer.info["ray"] = {"address": ray, "shards": len(plan), "threads": threads}
        with recording_failure(writer):
            _Driver(cfg, out, writer, probe, shapes, plan, threads, progress, on_progress).run()
    return out


class _Driver:
    """The two rounds of one distributed run (see the module docstring)."""

    def __init__(self, cfg, out: Path, writer, probe, shapes, plan, threads, progress,
                 on_progress):
        import ray
        self.ray = ray
        self.cfg, self.out, self.writer, self.probe = cfg, out, writer, probe
        self.shapes, self.plan, self.threads = shapes, plan, threads
        self.progress, self.on_progress = progress, on_progress
        self.n = len(probe)
        self.cache = out / "cache"
        self.saved = self.cache / "shards"
        self.saved.mkdir(parents=True, exist_ok=True)
        ident = cfg.identity()
        self.key = hashlib.sha1(f"{ident}|{out.resolve()}|{plan}".encode()).hexdigest()[:16]
        self.timings = {}

    # ---- shard specs and tasks
    def _specs(self) -> list[ShardSpec]:
        token = ""
        alive = [nd for nd in self.ray.nodes() if nd.get("Alive")]
        if self.cfg.keep_acts and len(alive) == 1:   # one machine: acts.npy as a local run
            token = self._acts_files()
        pause = float(os.environ.get("DISSECT_SHARD_PAUSE") or 0)
        fp = probe_fingerprint(self.probe)
        cfg = asdict(self.cfg)
        cfg["probe"] = _absolute_probe(self.cfg.probe)
        return [ShardSpec(cfg=cfg, shard=i, rows=r, images=self.n, key=self.key, fingerprint=fp,
                          threads=self.threads, acts_dir=str(self.cache.resolve()) if token
                          else None, token=token, pause=pause)
                for i, r in enumerate(self.plan)]

    def _acts_files(self) -> str:
        """The acts files (the cache's dtype) the shards fill when they share this folder; the
        folder's token."""
        dtype = np.float16 if self.cfg.cache_dtype == "float16" else np.float32
        for name, (k, h, w) in self.shapes.items():
            f = self.cache / f"{name}.acts.npy"
            shape = (self.n, k, h, w)
            try:
                ok = np.load(f, mmap_mode="r").shape == shape and np.load(f, mmap_mode="r").dtype == dtype
            except (OSError, ValueError):
                ok = False
            if not ok:
                ActCache.create(f, dtype, shape).close()
        token_file = self.cache / "shared-token"
        if not token_file.exists():
            atomic_write(token_file, lambda fh: fh.write(secrets.token_hex(16).encode()))
        return token_file.read_text()

    def _options(self, node_id: str | None = None) -> dict:
        opts = {"num_cpus": self.threads, "max_retries": MAX_RETRIES, "retry_exceptions": False}
        if self.cfg.device.startswith("cuda"):
            opts["num_gpus"] = 1
        if node_id:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
        return opts

    # ---- resume files
    def _load(self, rnd: int, spec: ShardSpec) -> dict | None:
        f = self.saved / f"r{rnd}-{spec.shard}.pt"
        if not f.exists():
            return None
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception:
            return None
        if state.get("key") != self.key or tuple(state.get("rows", ())) != tuple(spec.rows):
            return None
        return state["result"]

    def _save(self, rnd: int, spec: ShardSpec, result: dict) -> None:
        state = {"key": self.key, "rows": list(spec.rows), "result": result}
        write_torch(self.saved / f"r{rnd}-{spec.shard}.pt", state)

    # ---- one round
    def _round(self, rnd: int, specs: list[ShardSpec], submit) -> dict[int, dict]:
        """Results of every shard for round `rnd`: saved ones, then the tasks' as they finish."""
        from tqdm.auto import tqdm
        results = {s.shard: r for s in specs if (r := self._load(rnd, s)) is not None}
        todo = {submit(s): s for s in specs if s.shard not in results}
        phase = "forward" if rnd == 1 else "tally"
        total = sum(hi - lo for lo, hi in self.plan)
        bar = tqdm(total=total, unit="img", desc=f"{phase} ({len(specs)} shards)",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while todo:
                ready, _ = self.ray.wait(list(todo), num_returns=1, timeout=1.0)
                for ref in ready:
                    spec = todo.pop(ref)
                    results[spec.shard] = self._get(ref, spec)
                    self._save(rnd, spec, results[spec.shard])
                self._report(phase, results, specs, bar)
            self._report(phase, results, specs, bar, force=True)
        finally:
            bar.close()
            for ref in todo:               # interrupted or failed: stop the other shards
                self.ray.cancel(ref)
        return results

    def _get(self, ref, spec: ShardSpec) -> dict:
        from ray import exceptions as rx
        try:
            return self.ray.get(ref)
        except rx.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, ShardError):
                raise ShardError(str(cause)) from None
            raise RunError(f"shard {spec.shard} (images {spec.rows[0]}-{spec.rows[1]}) failed: "
                           f"{type(cause).__name__ if cause else ''} {cause or e}") from None
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError) as e:
            raise RunError(f"shard {spec.shard} (images {spec.rows[0]}-{spec.rows[1]}): its "
                           f"worker died {MAX_RETRIES + 1} times ({type(e).__name__}); check "
                           "the node's memory and logs, then run the same command again to "
                           "resume") from None

    def _report(self, phase: str, results: dict, specs, bar, force: bool = False) -> None:
        try:
            board = self.ray.get(self.board.snapshot.remote(), timeout=5)
        except Exception:   # progress is best effort
            board = {}
        rows = []
        for s in specs:
            b = dict(board.get(s.shard, {}))
            size = s.rows[1] - s.rows[0]
            done = size if s.shard in results else min(int(b.get("done", 0)), size) \
                if b.get("phase") == phase else 0
            rows.append({"shard": s.shard, "images": list(s.rows), "phase": phase,
                         "done": done, "total": size, "attempts": int(b.get("attempts", 0)),
                         "node": b.get("node", ""), "pid": b.get("pid"),
                         "finished": s.shard in results})
        total = sum(r["done"] for r in rows)
        bar.update(total - bar.n)
        self.writer.info["shards"] = rows
        self.writer.progress(phase, total, sum(r["total"] for r in rows), force=force)
        if self.on_progress is not None:
            self.on_progress(rows)

    # ---- the run
    def run(self) -> None:
        cfg, ray = self.cfg, self.ray
        self.board = ray.remote(num_cpus=0)(ShardBoard).remote()
        specs = self._specs()
        fwd = ray.remote(forward_shard)
        tal = ray.remote(tally_shard)
        board = self.board

        t0 = time.perf_counter()
        r1 = self._round(1, specs, lambda s: fwd.options(**self._options()).remote(s, board))
        self.timings["forward"] = round(time.perf_counter() - t0, 3)

        t0 = time.perf_counter()
        layers = {name: _Merged(name, shape, self.n, cfg) for name, shape in self.shapes.items()}
        for s in specs:
            for name, st in r1[s.shard]["layers"].items():
                layers[name].add_forward(s.rows, st)
        thresholds = {name: torch.from_numpy(L.quant.readout()) for name, L in layers.items()}
        edges = {name: Histogram.from_range(L.minmax.min, L.minmax.max, cfg.bins).edges
                 for name, L in layers.items()}
        merge = time.perf_counter() - t0

        t0 = time.perf_counter()
        r2 = self._round(2, specs, lambda s: tal.options(
            **self._options(r1[s.shard].get("node_id"))).remote(s, thresholds, edges, board))
        self.timings["tally"] = round(time.perf_counter() - t0, 3)

        t0 = time.perf_counter()
        concepts, cats, lut, cc = concept_tables(self.probe)
        for L in layers.values():
            L.tally = IoUTally(L.shape[0], len(concepts), len(cats))
            L.hist = Histogram(edges[L.name])
            L.trust = PerImageStats.for_layer(cfg, self.probe, L.shape, len(concepts), len(cats))
        for s in specs:
            for name, st in r2[s.shard]["layers"].items():
                layers[name].add_tally(st)
        acts = cfg.keep_acts and all(r2[s.shard].get("acts_written") for s in specs)
        for L in layers.values():
            if acts:
                L.cache = ActCache.open(self.cache / f"{L.name}.acts.npy")
        merge += time.perf_counter() - t0
        self.timings["merge"] = round(merge, 3)
        for row in self.writer.info.get("shards", []):    # each shard's own compute time
            row["seconds"] = {"forward": r1[row["shard"]].get("seconds"),
                              "tally": r2[row["shard"]].get("seconds")}
        if cfg.keep_acts and not acts:
            self.writer.info["acts"] = ("not kept: the shards ran on other machines than this "
                                        "run folder's, and their activations stay there")
            print(f"note: {self.out} gets no acts.npy ({self.writer.info['acts']})",
                  file=sys.stderr)

        t0 = time.perf_counter()
        self.writer.progress("write", 0, len(layers), force=True)
        from dissect.engine.results import write_results
        write_results(self.writer, cfg, self.probe, concepts, cats, cc, layers, thresholds)
        self.timings["write"] = round(time.perf_counter() - t0, 3)
        self.writer.info["progress"] = {"phase": "write", "done": len(layers),
                                        "total": len(layers)}
        self.writer.finish(timings=self.timings)
        for L in layers.values():
            L.cache = None
        shutil.rmtree(self.cache, ignore_errors=True)


def _absolute_probe(spec: str) -> str:
    """`broden:DIR` / `folder:DIR` with DIR made absolute (workers start in other folders)."""
    kind, sep, arg = spec.partition(":")
    if kind in ("broden", "folder") and arg:
        return f"{kind}:{os.path.abspath(os.path.expanduser(arg))}"
    return spec
