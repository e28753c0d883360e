"""Fit a dictionary on a run's layer and dissect its features exactly as the engine dissects units.

    out = features_layer("runs/toy", "conv6", "sae", k=512, topk=8)   # -> summary dict
    open_run("runs/toy").units("conv6@sae512")                       # one row per feature

The fit reads the run's kept activations (layers/<layer>/acts.npy, memory-mapped) on the
probe's training half (dissect.probes.splits); codes are computed from the same cache, chunk by chunk,
and go through the engine's own statistics, tally, trust columns and writer (dissect.engine.dissection,
dissect.engine.results), so a feature's threshold, IoU, held-out IoU, top images and nulls mean what a
unit's do. The layer folder is assembled under RUN/.staging/ and renamed into RUN/layers/ only
when complete; run.json then lists it under "features" with the layer it is a basis of.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dissect.features.basis import METHODS, Basis
from dissect.features.fit import fit_basis, fit_seeds, match_cosines, sample_positions
from dissect.errors import FeatureError, RunError
from dissect.probes.registry import open_run_probe
from dissect.runs.folder import open_run
from dissect.runs.schema import read_info
from dissect.runs.atomic import write_csv, write_json, write_npy, write_npz

STAGING = ".staging"
_NAME = re.compile(r"^(?P<base>.+)@(?P<method>pca|nmf|sae)(?P<k>\d+)$")
CHUNK = 64


def feature_layer_name(layer: str, method: str, k: int) -> str:
    """`conv6@sae512`."""
    return f"{layer}@{method}{int(k)}"


def parse_feature_layer(name: str) -> tuple[str, str, int] | None:
    """(base layer, method, K) of a feature layer's name, or None for a layer of units."""
    m = _NAME.match(str(name))
    return (m["base"], m["method"], int(m["k"])) if m else None


def layer_label(name: str) -> str:
    """What a layer picker shows: `conv6` -> "conv6"; `conv6@sae512` -> "features of conv6
    (SAE, 512)"."""
    parsed = parse_feature_layer(name)
    return f"features of {parsed[0]} ({parsed[1].upper()}, {parsed[2]})" if parsed else name


def default_k(method: str, channels: int) -> int:
    """K when --k is not given: 4x the channels for an SAE, the channels for PCA, 32 for NMF."""
    return {"sae": 4 * channels, "pca": channels, "nmf": min(32, channels)}[method]


class _Staging:
    """The subset of RunWriter that dissect.engine.results uses, writing under a staging folder."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def file(self, rel: str) -> Path:
        return self.path / rel

    def write_csv(self, rel: str, df: pd.DataFrame) -> Path:
        return write_csv(self.path / rel, df)

    def write_npy(self, rel: str, a: np.ndarray) -> Path:
        return write_npy(self.path / rel, a)

    def write_npz(self, rel: str, **arrays) -> Path:
        return write_npz(self.path / rel, **arrays)

    def write_json(self, rel: str, obj) -> Path:
        return write_json(self.path / rel, obj)

    def progress(self, *args, **kwargs) -> None:
        pass


class CodeView:
    """Code maps [N, K, h, w] of a cache acts [N, C, h, w]: `view[lo:hi]`, `view[index_array]`,
    `view[index_array, k]`. Writes are ignored. Dense codes (PCA, NMF) are computed on every
    read. A TopK SAE's codes have at most topk non-zeros per position, so, given a `folder`,
    `remember` keeps them sparse in two memory-mapped files there (values and indices
    [N, h, w, topk]: 6·topk bytes a position, 19 MB for 2,000 ToyWorld images at topk 8, where
    the dense codes take 800 MB; on disk, so memory does not grow with the probe set) and later
    reads scatter them back, exactly, instead of encoding again."""

    def __init__(self, acts: np.ndarray, basis: Basis, device: str = "cpu",
                 folder: Path | None = None):
        n, _, h, w = acts.shape
        self.acts, self.basis, self.device = acts, basis.to(device), device
        self.shape = (n, basis.k, h, w)
        self.dtype = np.dtype(np.float32)
        t = basis.topk
        self.sparse = None
        if folder is not None and basis.method == "sae" and 0 < t < basis.k:
            from numpy.lib.format import open_memmap
            Path(folder).mkdir(parents=True, exist_ok=True)
            index = np.int16 if basis.k <= np.iinfo(np.int16).max else np.int32
            self.sparse = (open_memmap(Path(folder) / "code_values.npy", "w+", np.float32,
                                       (n, h, w, t)),
                           open_memmap(Path(folder) / "code_index.npy", "w+", index, (n, h, w, t)),
                           np.zeros(n, bool))

    def remember(self, lo: int, hi: int, z: torch.Tensor) -> None:
        """Keep the codes z [hi-lo, K, h, w] of rows lo..hi (a TopK SAE's; else nothing)."""
        if self.sparse is None:
            return
        values, index, known = self.sparse
        v, i = z.permute(0, 2, 3, 1).topk(values.shape[-1], dim=-1)
        values[lo:hi], index[lo:hi], known[lo:hi] = v.cpu().numpy(), i.cpu().numpy(), True

    def codes(self, sel) -> torch.Tensor:
        if self.sparse is not None and self.sparse[2][sel].all():
            v = torch.from_numpy(self.sparse[0][sel]).to(self.device)
            i = torch.from_numpy(self.sparse[1][sel].astype(np.int64)).to(self.device)
            z = torch.zeros(*v.shape[:-1], self.basis.k, device=self.device)
            return z.scatter_(-1, i, v).permute(0, 3, 1, 2).contiguous()
        a = torch.from_numpy(np.array(self.acts[sel], dtype=np.float32)).to(self.device)
        return self.basis.encode_maps(a)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            rows, unit = key
            return self.codes(rows)[:, unit].cpu().numpy()
        return self.codes(key).cpu().numpy()

    def __setitem__(self, key, value) -> None:
        pass

    def __len__(self) -> int:
        return self.shape[0]


def _feature_layer(name: str, view: CodeView, cfg):
    """A dissection._Layer whose cache is the code view (no array of codes is allocated)."""
    from dissect.engine.layer_state import LayerState
    from dissect.engine.stats import MinMax, TailQuantile, TopK
    n, k, h, w = view.shape
    L = LayerState.__new__(LayerState)
    L.name, L.shape, L.fresh, L.files = name, (k, h, w), True, []
    L.cache, L.imgmax = view, np.zeros((n, k), np.float32)
    L.quant = TailQuantile(k, cfg.quantile, n * h * w)
    L.minmax, L.top = MinMax(k), TopK(k, cfg.topk)
    L.tally = L.hist = L.trust = None
    return L


class _Quality:
    """Held-out reconstruction R², L0 and dead features, accumulated chunk by chunk."""

    def __init__(self, k: int, c: int):
        self.sse, self.n, self.l0 = 0.0, 0, 0.0
        self.sx, self.sxx = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
        self.fired = torch.zeros(k, dtype=torch.bool)

    def add(self, x: torch.Tensor, z: torch.Tensor, basis: Basis) -> None:
        err = basis.decode(z) - x
        self.sse += float((err.double() ** 2).sum())
        self.n += len(x)
        self.sx += x.double().sum(0).cpu()
        self.sxx += (x.double() ** 2).sum(0).cpu()
        active = z > 0
        self.l0 += float(active.sum())
        self.fired |= active.any(0).cpu()

    def figures(self) -> dict:
        sst = float((self.sxx - self.sx ** 2 / max(self.n, 1)).sum())
        return {"r2": round(1 - self.sse / sst, 6) if sst > 0 else float("nan"),
                "l0": round(self.l0 / max(self.n, 1), 4), "dead": int((~self.fired).sum()),
                "heldout_positions": self.n}


def _positions(a: torch.Tensor) -> torch.Tensor:
    return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])


def _heldout_mse(basis: Basis, X: np.ndarray) -> float:
    x = torch.from_numpy(X)
    return float(((basis.decode(basis.encode(x)) - x) ** 2).sum(1).mean())


def _check_request(run, layer: str, method: str, k: int | None, topk: int | None):
    if method not in METHODS:
        raise FeatureError(f"unknown --method '{method}': use pca, nmf or sae")
    if k is not None and k < 1:
        raise FeatureError(f"--k {k}: a dictionary needs at least 1 feature; use --k 1 or more")
    if k is not None and topk is not None and topk > k:
        raise FeatureError(f"--topk {topk} is larger than --k {k}: a position cannot use more "
                           f"features than there are; use --topk {k} or less")
    if topk is not None and topk < 1:
        raise FeatureError(f"--topk {topk}: use --topk 1 or more")
    if not run.complete:
        raise RunError(f"run {run.path} is {run.status}; finish it first (run the same "
                       "`python -m dissect run ...` command again to resume)")
    units_layers = [l for l in run.config.get("layers", []) if parse_feature_layer(l) is None]
    if layer not in units_layers:
        raise FeatureError(f"run {run.path} has no layer '{layer}' (it has: "
                           f"{', '.join(units_layers) or 'none'}); pick one of those")
    acts = run.acts(layer)
    if acts is None:
        raise FeatureError(
            f"run {run.path} kept no activation cache for '{layer}' (layers/{layer}/acts.npy; "
            "it was made with --no-acts): re-create it with `python -m dissect run ... --out "
            f"{run.path} --overwrite` without --no-acts, then run features again")
    return acts


def features_layer(run_path: str | os.PathLike, layer: str, method: str = "sae",
                   k: int | None = None, topk: int | None = None, seed: int = 0,
                   images: int | None = None, device: str = "cpu", null: int | None = None,
                   overwrite: bool = False, keep_acts: bool = True,
                   progress: bool = True, steps: int = 0) -> dict:
    """Fit and dissect; returns basis.json's figures plus the folder's path ("path")."""
    from dissect.runs.lock import run_lock
    run = open_run(run_path)
    acts = _check_request(run, layer, method, k, topk)
    c = acts.shape[1]
    k = default_k(method, c) if k is None else int(k)
    topk = (min(8, k) if method == "sae" else 0) if topk is None else int(topk)
    _check_request(run, layer, method, k, topk or None)
    name = feature_layer_name(layer, method, k)
    target = run.path / "layers" / name
    if target.exists() and not overwrite:
        raise FeatureError(f"run {run.path} already has the feature layer '{name}'; pass "
                           "--overwrite to fit it again, or choose another --k")
    with run_lock(run.path):
        return _build(run, acts, layer, name, method, k, topk, seed, images, device, null,
                      overwrite, keep_acts, progress, steps)


def _build(run, acts, layer, name, method, k, topk, seed, images, device, null, overwrite,
           keep_acts, progress, steps) -> dict:
    from dissect.engine.config import DissectConfig
    from dissect.probes.splits import heldout_halves
    t_start = time.perf_counter()
    known = {f.name for f in fields(DissectConfig)}
    cfg = DissectConfig(**{key: v for key, v in run.config.items() if key in known})
    cfg = replace(cfg, layers=[name], device=device, cache="ram", keep_acts=keep_acts,
                  null=cfg.null if null is None else int(null))
    choose, measure = heldout_halves(run.images, cfg.seed, cfg.heldout)
    rows = np.flatnonzero(choose)[: images or None]
    X = sample_positions(acts, rows, seed=seed)
    Xv = sample_positions(acts, np.flatnonzero(measure), max_positions=20_000, seed=seed)
    if method == "sae":
        fits = fit_seeds(X, method, k, topk, (seed, seed + 1), device, steps)
    else:                                                 # deterministic fits: another sample
        X2 = sample_positions(acts, rows, seed=seed + 1, max_positions=len(X) // 2 or 1)
        fits = [fit_basis(X, method, k, topk, seed, device, steps),
                fit_basis(X2, method, k, topk, seed + 1, device, steps)]
    stab = match_cosines(fits[0].decoder.numpy(), fits[1].decoder.numpy(),
                         signed=method != "pca")
    basis = min(fits, key=lambda b: _heldout_mse(b, Xv)) if method == "sae" else fits[0]
    t_fit = time.perf_counter() - t_start

    info = {"method": method, "k": k, "topk": topk, "seed": seed, "basis_of": layer,
            "channels": c_of(acts), "images": int(len(rows)), "fit_positions": int(len(X)),
            "stability": round(float(stab.mean()), 4),
            "stable_share": round(float((stab >= 0.9).mean()), 4),
            "fit_seconds": round(t_fit, 3)}
    info = _dissect_basis(run, acts, name, basis, cfg, measure, info, overwrite, progress)
    info["seconds"] = round(time.perf_counter() - t_start, 3)
    _record_in_run(run.path, name, info)
    return {**info, "layer": name, "path": str(run.path / "layers" / name)}


def dissect_basis(run_path: str | os.PathLike, layer: str, basis: Basis, name: str,
                  overwrite: bool = False, progress: bool = False) -> Path:
    """Dissect the features of a given `basis` of `layer` into RUN/layers/`name` (for example
    the identity basis, which dissects the kept activations as units)."""
    from dissect.engine.config import DissectConfig
    from dissect.runs.lock import run_lock
    from dissect.probes.splits import heldout_halves
    run = open_run(run_path)
    acts = _check_request(run, layer, basis.method, basis.k, None)
    known = {f.name for f in fields(DissectConfig)}
    cfg = DissectConfig(**{key: v for key, v in run.config.items() if key in known})
    cfg = replace(cfg, layers=[name], cache="ram")
    _, measure = heldout_halves(run.images, cfg.seed, cfg.heldout)
    with run_lock(run.path):
        info = _dissect_basis(run, acts, name, basis, cfg, measure,
                              {"method": basis.method, "k": basis.k, "topk": basis.topk,
                               "seed": 0, "basis_of": layer}, overwrite, progress)
        _record_in_run(run.path, name, info)
    return run.path / "layers" / name


def _dissect_basis(run, acts, name, basis, cfg, measure, info, overwrite, progress) -> dict:
    """Codes through the engine into a staged layer folder, installed when complete."""
    from dissect.engine.layer_state import concept_tables
    from dissect.engine.phases import phase2
    from dissect.engine.phases import record_batch
    from dissect.engine.results import write_results
    from dissect.trust.per_image import PerImageStats
    staging = run.path / STAGING / name
    shutil.rmtree(staging, ignore_errors=True)          # a killed attempt restarts cleanly
    device, k = cfg.device, basis.k
    probe = open_run_probe(run)
    concepts, cats, lut, cc = concept_tables(probe)
    view = CodeView(acts, basis, device, folder=staging / "codes")
    L = _feature_layer(name, view, cfg)
    q = _Quality(k, c_of(acts))
    n = len(acts)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        a = torch.from_numpy(np.array(acts[lo:hi], dtype=np.float32)).to(device)
        z = view.basis.encode_maps(a)
        view.remember(lo, hi, z)
        record_batch(L, z, torch.arange(lo, hi), np.arange(lo, hi), lo, hi, True)
        sel = torch.from_numpy(measure[lo:hi]).to(device)
        if sel.any():
            q.add(_positions(a[sel]), _positions(z[sel]), view.basis)
    thresholds = {name: torch.from_numpy(L.quant.readout())}
    L.start_phase2(len(concepts), len(cats), cfg.bins)
    L.trust = PerImageStats.for_layer(cfg, probe, L.shape, len(concepts), len(cats))
    writer = _Staging(staging)
    phase2(cfg, probe, {name: L}, thresholds, lut, cc, len(cats), writer, 0, None, progress)
    write_results(writer, cfg, probe, concepts, cats, cc, {name: L}, thresholds)
    folder = staging / "layers" / name
    info = {**info, **q.figures()}
    basis.info = info
    basis.save(folder)
    _install(run, folder, name, overwrite)
    shutil.rmtree(staging.parent, ignore_errors=True)
    return info


def c_of(acts: np.ndarray) -> int:
    return int(acts.shape[1])


def _install(run, folder: Path, name: str, overwrite: bool) -> None:
    """Rename the finished folder into RUN/layers/ (an old one moved aside first)."""
    target = run.path / "layers" / name
    old = None
    if target.exists():
        if not overwrite:
            raise FeatureError(f"run {run.path} already has the feature layer '{name}'; pass "
                               "--overwrite to fit it again")
        old = run.path / STAGING / f"{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(folder, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _record_in_run(path: Path, name: str, info: dict) -> None:
    """run.json: features[name] = what it is a basis of and its figures; counts.units[name]."""
    doc = read_info(path)
    feats = dict(doc.get("features") or {})
    feats[name] = {key: info.get(key) for key in ("basis_of", "method", "k", "topk", "seed",
                                              "r2", "l0", "dead", "stability")}
    doc["features"] = feats
    doc.setdefault("counts", {}).setdefault("units", {})[name] = info["k"]
    write_json(path / "run.json", doc)
