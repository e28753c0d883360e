"""The dissection of a run folder: lock, check, load, run both phases, write the results.

    cfg = DissectConfig(model="resnet18", weights="none", layers=["layer3", "layer4"],
                        probe="broden:/data/broden1_224")
    dissect(cfg, "runs/r18")          # resumes when runs/r18 holds the same, unfinished run

The phases are dissect.engine.phases; each layer's cache and statistics dissect.engine.layer_state;
the files dissect.engine.results. Activations are cached as fp32 by default, in an on-disk memmap
under <run>/cache, removed when the run completes. Semantics: ../shared/DESIGN.md.
"""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator

import torch

from dissect.engine.config import DENOMINATORS, DissectConfig, use_cfg_layout
from dissect.engine.layer_state import LayerState, concept_tables, layer_shapes
from dissect.engine.phases import clean_worker_error, phase1, phase2, resume
from dissect.errors import RunError
from dissect.probes.registry import open_probe
from dissect.probes.types import ProbeSet
from dissect.runs.lock import LOCK, run_lock
from dissect.runs.schema import read_info
from dissect.runs.writer import RunWriter
from dissect.trust.per_image import PerImageStats


def _versions() -> dict:
    import torchvision
    from dissect.version import __version__
    return {"dissect": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def dissect(cfg: DissectConfig, out: str | Path, *, lm=None, probe: ProbeSet | None = None,
            progress: bool = True, overwrite: bool = False) -> Path:
    """Run (or resume) a dissection into the run folder `out`; returns its path.

    `lm` (a LoadedModel) and `probe` override loading from `cfg` (tests, the app).
    Raises RunError when `out` holds a different run (pass overwrite=True to replace it).
    """
    out = Path(out)
    if lm is not None and cfg.weights != lm.weights:   # record the weights actually used
        cfg = replace(cfg, weights=lm.weights)
    refuse_foreign(out)     # before the lock file: a foreign folder is left as it was
    with run_lock(out):     # RunLocked (naming pid, host, start) while another run writes here
        return _locked_dissect(cfg, out, lm, probe, progress, overwrite)


def refuse_foreign(out: Path) -> None:
    """OverwriteRefused when `out` holds something that is not a run (dissect.runs.marker)."""
    if out.is_dir() and not os.path.lexists(out / "run.json"):
        from dissect.runs.marker import prepare_out
        prepare_out(out, "run", overwrite=False)


def _locked_dissect(cfg: DissectConfig, out: Path, lm, probe, progress: bool,
                    overwrite: bool) -> Path:
    if check_out(cfg, out, overwrite):
        return out
    if probe is None:
        probe = open_cfg_probe(cfg)
    from dissect.trust.columns import check_trust_options
    check_trust_options(cfg, probe.images)
    if lm is None:
        from dissect.models.registry import load_model
        lm = load_model(cfg.model, cfg.weights, classes=cfg.classes, device=cfg.device,
                        seed=cfg.seed)
    use_cfg_layout(lm, cfg)
    shapes = layer_shapes(lm, probe, cfg.layers)
    writer = new_writer(cfg, out, probe, shapes)
    with recording_failure(writer):
        _run(cfg, out, writer, lm, probe, shapes, progress)
        if cfg.baseline == "random-init":
            from dissect.trust.baselines import random_init_baseline
            random_init_baseline(cfg, out, dissect, progress)
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
        writer.fail(clean_worker_error(e) if isinstance(e, Exception) else e)
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
            from dissect.runs.damage import require_whole
            require_whole(out)           # RunError naming the damage and the repair command
            return True
        if not same and not overwrite:
            raise RunError(f"{out} holds a different run ({info.get('config', {}).get('model')}"
                           f" on {info.get('config', {}).get('probe')}); pass another --out, or "
                           "--overwrite to replace it")
        if overwrite and not same:
            _clear(out)
    else:        # no run here yet: only an empty folder (or the app's lock and log) becomes one
        from dissect.runs.marker import prepare_out
        prepare_out(out, "run", overwrite=False)
    return False


def _clear(out: Path) -> None:
    """Empty a run folder for --overwrite, keeping the lock file this process holds; only a
    folder that holds a run (dissect.runs.marker) is ever emptied."""
    from dissect.runs.marker import remove
    remove(out, "run", keep=(LOCK,))


def open_cfg_probe(cfg: DissectConfig) -> ProbeSet:
    """The probe set `cfg` names, opened with its options."""
    return open_probe(cfg.probe, **{k: v for k, v in cfg.probe_options.items() if v is not None})


def new_writer(cfg: DissectConfig, out: Path, probe: ProbeSet, shapes: dict) -> RunWriter:
    """A RunWriter for `out` with the run's identity and counts in run.json (status running)."""
    writer = RunWriter(out, asdict(cfg), versions=_versions())
    writer.info["identity"] = cfg.identity()
    from dissect.models.registry import run_random_init
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
    layers = {name: LayerState(name, s, n, cfg, cache_dir) for name, s in shapes.items()}
    concepts, cats, lut, cc = concept_tables(probe)
    timings = dict(writer.info.get("timings") or {})
    ck1, ck2 = (cache_dir / "phase1.pt", cache_dir / "phase2.pt") if cache_dir else (None, None)

    # ---- phase 1: forward once per image
    t0 = time.perf_counter()
    if any(L.fresh for L in layers.values()):    # checkpoints describe other cache files
        for ck in (ck1, ck2):
            if ck is not None:
                ck.unlink(missing_ok=True)
    done = resume(ck1, cfg, layers, n)
    if done < n:
        phase1(cfg, lm, probe, layers, writer, done, ck1, progress)
    timings["forward"] = round(time.perf_counter() - t0, 3)
    thresholds = {name: torch.from_numpy(L.quant.readout()) for name, L in layers.items()}

    # ---- phase 2: tally
    t0 = time.perf_counter()
    for L in layers.values():
        L.start_phase2(len(concepts), len(cats), cfg.bins)
        L.trust = PerImageStats.for_layer(cfg, probe, L.shape, len(concepts), len(cats))
    done = resume(ck2, cfg, layers, n)
    if done < n:
        phase2(cfg, probe, layers, thresholds, lut, cc, len(cats), writer, done, ck2, progress)
    timings["tally"] = round(time.perf_counter() - t0, 3)
    if cfg.baseline == "rotation":
        t0 = time.perf_counter()
        from dissect.trust.baselines import rotation_baseline
        rotation_baseline(cfg, probe, layers, concepts, cats, lut, cc, writer)
        timings["baseline"] = round(time.perf_counter() - t0, 3)

    # ---- write
    t0 = time.perf_counter()
    writer.progress("write", 0, len(layers), force=True)
    from dissect.engine.results import write_results
    write_results(writer, cfg, probe, concepts, cats, cc, layers, thresholds)
    timings["write"] = round(time.perf_counter() - t0, 3)
    writer.info["progress"] = {"phase": "write", "done": len(layers), "total": len(layers)}
    writer.finish(timings=timings)
    if cache_dir is not None:
        for L in layers.values():
            del L.cache, L.imgmax
        shutil.rmtree(cache_dir, ignore_errors=True)
