"""Concept directions in a layer's activation space: ITI mass-mean, RepE PCA, TCAV-style probe.

    c = contrast_from_probe(lm, open_probe("toyworld:500"), "sun", "conv6")   # with vs without sun
    d = fit(c, "mean")               # Direction: unit vector, norm, sigma, auroc_heldout, unit_auroc
    save_direction(d, "dirs/sun")    # dirs/sun/direction.safetensors + direction.json
    d = load_direction("dirs/sun"); check_direction(d, lm, "conv6")

Methods: `mean` = μ⁺ − μ⁻ (ITI's mass-mean shift); `pca` = first principal component of pair
differences (RepE; true pairs on a `--pair` probe, else random positive/negative pairs, each
difference given a random sign as RepE does), its sign fixed so positives project higher;
`probe` = a logistic-regression CAV (scikit-learn) on standardised features, mapped back to
activation units. The direction is fitted on the probe's training half and `auroc_heldout` reads
the concept out on the other half by projecting onto it; `sigma` is the std of all projections.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


import numpy as np
import torch

from dissect.errors import DirectionError
from dissect.directions.pooled import check_channels, pool, resolve_pooling

METHODS = ("mean", "pca", "probe")
MIN_POSITIVES = 10


@dataclass
class Contrast:
    """Features of positive and negative examples of a concept at one layer."""
    X: np.ndarray                  # float32 [rows, K]
    y: np.ndarray                  # bool [rows]
    image: np.ndarray              # int [rows]: the image each row comes from
    train: np.ndarray              # bool [rows]: rows of the fitting half
    concept: str
    layer: str
    pooling: str
    source: str = ""
    pair: np.ndarray | None = None   # int [rows]: pair id (paired probes), -1 when unpaired
    n_pos: int = 0                 # positive / negative images
    n_neg: int = 0


@dataclass
class Direction:
    vector: torch.Tensor           # float32 [K], unit norm
    layer: str
    concept: str
    method: str
    pooling: str
    auroc_heldout: float
    norm: float                    # norm of the raw (unnormalised) direction
    sigma: float                   # std of projections onto the unit vector
    model: str = ""
    weights: str = ""
    n_pos: int = 0
    n_neg: int = 0
    source: str = ""
    unit_auroc: torch.Tensor | None = None    # float32 [K]: each unit alone reads the concept
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"layer": self.layer, "concept": self.concept, "method": self.method,
                "pooling": self.pooling,     # null: the held-out half could not score it
                "auroc_heldout": round(self.auroc_heldout, 6) if np.isfinite(self.auroc_heldout)
                else None,
                "norm": round(self.norm, 6), "sigma": round(self.sigma, 6),
                "model": self.model, "weights": self.weights, "units": int(self.vector.numel()),
                "n_pos": self.n_pos, "n_neg": self.n_neg, "source": self.source, **self.extra}


# ---- contrast sets ---------------------------------------------------------------------------

def concept_id(probe, concept: str) -> int:
    """The probe's id for concept `concept` (by name, case-insensitive); DirectionError if none."""
    from dissect.interventions.labelled import norm_name
    names = probe.concepts["name"].astype(str).map(norm_name)
    hit = probe.concepts[names == norm_name(concept)]
    if hit.empty:
        some = ", ".join(probe.concepts["name"].astype(str).head(12))
        raise DirectionError(f"concept '{concept}' is not in the probe ({probe.description or ''}"
                             f"); its concepts include: {some}")
    return int(hit["concept"].iloc[0])


def _check_counts(concept: str, n_pos: int, n_neg: int, where: str) -> None:
    if n_pos < MIN_POSITIVES:
        raise DirectionError(f"concept '{concept}' has only {n_pos} positive image(s) in {where} "
                             f"(need at least {MIN_POSITIVES}); use a larger probe (e.g. "
                             "toyworld:500) or another concept")
    if n_neg < MIN_POSITIVES:
        raise DirectionError(f"concept '{concept}' is in all but {n_neg} image(s) of {where} "
                             f"(need at least {MIN_POSITIVES} without it); use a larger or more "
                             "varied probe")


@torch.no_grad()
def contrast_from_probe(lm, probe, concept: str, layer: str, pooling: str | None = "auto",
                        batch_size: int = 32, workers: int = 0, seed: int = 0) -> Contrast:
    """Images with vs without the concept's pixels (or image-level label), pooled at `layer`.

    `pooling="spatial"`: every position is a row, positive where its cell holds the concept.
    """
    from dissect.models.hooks import capture, stopped_forward
    from dissect.probes.types import probe_loader
    from dissect.probes.splits import heldout_halves
    import copy
    pooling = resolve_pooling(lm.model, pooling)
    cid = concept_id(probe, concept)
    cat = str(probe.concepts.set_index("concept").at[cid, "category"])
    if cat in getattr(probe, "categories", []):
        probe = copy.copy(probe)          # decode only the concept's own category
        probe.categories = [cat]
    Xs, ys, imgs = [], [], []
    with capture(lm.model, [layer], stop_after=True) as acts:
        for batch in probe_loader(probe, batch_size=batch_size, workers=workers):
            stopped_forward(lm.model, lm.normalize(batch.images.to(lm.device)))
            out = acts.get(layer)
            check_channels(layer, out)
            out = out.float()
            b, k, h, w = out.shape
            if pooling == "spatial":
                cell = torch.zeros(b, h, w, dtype=torch.bool)
                for planes in batch.pixel.values():
                    hit = (planes == cid).any(1, keepdim=True).float()
                    cell |= torch.nn.functional.adaptive_max_pool2d(hit, (h, w))[:, 0] > 0
                for lab in batch.scalar.values():
                    cell |= (lab == cid).any(1)[:, None, None]
                Xs.append(out.permute(0, 2, 3, 1).reshape(-1, k).cpu().numpy())
                ys.append(cell.reshape(-1).numpy())
                imgs.append(np.repeat(batch.index.numpy(), h * w))
                continue
            present = torch.zeros(b, dtype=torch.bool)
            for planes in batch.pixel.values():
                present |= (planes == cid).flatten(1).any(1)
            for lab in batch.scalar.values():
                present |= (lab == cid).any(1)
            Xs.append(pool(out, pooling).cpu().numpy())
            ys.append(present.numpy())
            imgs.append(batch.index.numpy())
    X, y, image = np.concatenate(Xs), np.concatenate(ys), np.concatenate(imgs)
    per_image = np.zeros(len(probe), bool)
    np.logical_or.at(per_image, image, y)
    n_pos = int(per_image.sum())
    _check_counts(concept, n_pos, len(probe) - n_pos, probe.description or "the probe")
    choose, _measure = heldout_halves(probe.images, seed)
    rows = getattr(probe, "rows", None)
    pair = None
    if getattr(probe, "pair", None) and rows is not None and "pair" in rows:
        pair = rows["pair"].astype(int).to_numpy(np.int64)[image]
    return Contrast(X, y, image, choose[image], concept, layer, pooling,
                    getattr(probe, "description", ""), pair, n_pos, len(probe) - n_pos)


@torch.no_grad()
def contrast_from_folders(lm, positives: str, negatives: str, layer: str, concept: str = "",
                          pooling: str | None = "auto", batch_size: int = 32,
                          seed: int = 0) -> Contrast:
    """Every image in folder `positives` against every image in `negatives`, pooled at `layer`."""
    from dissect.interventions.ablation import image_tensor
    from dissect.interventions.labelled import _readable
    from dissect.probes.splits import heldout_halves
    pooling = resolve_pooling(lm.model, pooling)
    if pooling == "spatial":
        raise DirectionError("--pooling spatial needs concept pixels: use --probe, not folders")
    files = []
    for folder, label in ((positives, True), (negatives, False)):
        if not os.path.isdir(folder):
            raise DirectionError(f"image folder '{folder}' does not exist; give a folder of images")
        files += [(os.path.join(folder, f), label) for f in sorted(os.listdir(folder))
                  if not f.startswith(".") and _readable(os.path.join(folder, f))]
    n_pos = sum(1 for _f, l in files if l)
    _check_counts(concept or Path(positives).name, n_pos, len(files) - n_pos,
                  f"folders {positives} / {negatives}")
    from dissect.directions.pooled import pooled_features
    batches = (torch.stack([image_tensor(lm, f) for f, _l in files[s:s + batch_size]])
               for s in range(0, len(files), batch_size))
    X = pooled_features(lm, batches, [layer], pooling).layers[layer]
    y = np.array([l for _f, l in files])
    choose, _m = heldout_halves(len(files), seed, "random")
    return Contrast(X, y, np.arange(len(files)), choose, concept or Path(positives).name, layer,
                    pooling, f"folders {positives} vs {negatives}", None, n_pos, len(files) - n_pos)


# ---- fitting ---------------------------------------------------------------------------------

def _raw_direction(X: np.ndarray, y: np.ndarray, method: str, pair: np.ndarray | None,
                   seed: int) -> np.ndarray:
    pos, neg = X[y], X[~y]
    mean_diff = pos.mean(0) - neg.mean(0)
    if method == "mean":
        return mean_diff
    if method == "pca":
        rng = np.random.default_rng(seed)
        if pair is not None:
            d = _pair_differences(X, y, pair)
        else:
            n = min(len(pos), len(neg))
            d = pos[rng.permutation(len(pos))[:n]] - neg[rng.permutation(len(neg))[:n]]
        d = d * rng.choice([-1.0, 1.0], size=(len(d), 1))
        d = d - d.mean(0)
        _u, _s, vt = np.linalg.svd(d, full_matrices=False)
        v = vt[0] * np.linalg.norm(mean_diff)
        return v if float(v @ mean_diff) >= 0 else -v
    if method == "probe":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        sc = StandardScaler().fit(X)
        clf = LogisticRegression(max_iter=2000).fit(sc.transform(X), y)
        return clf.coef_[0] / sc.scale_
    raise DirectionError(f"--method {method}: use {', '.join(METHODS)}")


def _pair_differences(X: np.ndarray, y: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """f(with) − f(without) for every pair that has both twins."""
    out = []
    order = np.argsort(pair, kind="stable")
    for p in np.unique(pair[pair >= 0]):
        rows = order[np.searchsorted(pair[order], p):np.searchsorted(pair[order], p, "right")]
        wi, wo = rows[y[rows]], rows[~y[rows]]
        if len(wi) and len(wo):
            out.append(X[wi].mean(0) - X[wo].mean(0))
    if not out:
        raise DirectionError("no pair has both twins (with and without the concept)")
    return np.stack(out)


def auroc(y: np.ndarray, score: np.ndarray) -> np.ndarray | float:
    """Area under the ROC curve of `score` (rows; [rows, K] gives one per column) for labels `y`.

    Mann–Whitney form with mid-ranks for ties (equals sklearn's roc_auc_score); nan when `y`
    has one class only."""
    from scipy.stats import rankdata
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    score = np.asarray(score, np.float64)
    if not n_pos or not n_neg:
        return float("nan") if score.ndim == 1 else np.full(score.shape[1], np.nan)
    ranks = rankdata(score, axis=0)
    a = (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(a) if score.ndim == 1 else a


def fit(c: Contrast, method: str = "mean", seed: int = 0) -> Direction:
    """A Direction fitted on the contrast's training half, read out on the other half."""
    if method not in METHODS:
        raise DirectionError(f"--method {method}: use {', '.join(METHODS)}")
    tr = c.train
    if not (c.y[tr].any() and (~c.y[tr]).any()):
        raise DirectionError(f"the training half has no {'positive' if not c.y[tr].any() else 'negative'} "
                             f"example of '{c.concept}'; use a larger probe")
    raw = _raw_direction(c.X[tr], c.y[tr], method, None if c.pair is None else c.pair[tr], seed)
    norm = float(np.linalg.norm(raw))
    if not norm > 0:
        raise DirectionError(f"the {method} direction of '{c.concept}' at {c.layer} is zero "
                             "(the layer does not tell positives from negatives)")
    unit = raw / norm
    proj = c.X @ unit
    unit_auroc = auroc(c.y, c.X).astype(np.float32)
    return Direction(torch.from_numpy(unit.astype(np.float32)), c.layer, c.concept, method,
                     c.pooling, auroc(c.y[~tr], proj[~tr]), norm, float(proj.std()),
                     n_pos=c.n_pos, n_neg=c.n_neg, source=c.source,
                     unit_auroc=torch.from_numpy(np.nan_to_num(unit_auroc, nan=0.5)))


def paired_direction(c: Contrast) -> np.ndarray:
    """The true direction E[f(x⁺) − f(x⁻)] over a paired probe's pairs (unnormalised)."""
    if c.pair is None:
        raise DirectionError("the paired-render direction needs a --pair probe (toyworld:N --pair OBJ)")
    return _pair_differences(c.X, c.y, c.pair).mean(0)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- files -----------------------------------------------------------------------------------

_DIGEST_KEYS = ("layer", "concept", "method", "pooling", "auroc_heldout", "norm", "sigma",
                "model", "weights", "units", "n_pos", "n_neg")


def _digest_numbers(meta: dict) -> dict:
    return {k: meta.get(k) for k in _DIGEST_KEYS}


def save_direction(d: Direction, out: str | os.PathLike) -> Path:
    """Write OUT/direction.safetensors, then OUT/direction.json (its presence marks completion).

    direction.json carries `sha256`, a digest of the tensors and its numbers (norm, sigma,
    shapes, ...), checked by load_direction. OUT must be missing, empty or a direction folder
    (dissect.runs.marker): a run or any other folder is refused, never written into."""
    from safetensors.torch import save
    from dissect.runs.atomic import atomic_write
    from dissect.runs.digest import digest
    from dissect.runs.marker import prepare_out, stamp
    out = Path(out)
    prepare_out(out, "direction", overwrite=True, clear=False)
    if not (np.isfinite(d.sigma) and d.sigma > 0 and np.isfinite(d.norm) and d.norm > 0):
        raise DirectionError(f"the direction of '{d.concept}' has sigma {d.sigma} and norm "
                             f"{d.norm}: both must be finite and > 0; nothing saved")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"direction": d.vector.float().contiguous()}
    if d.unit_auroc is not None:
        tensors["unit_auroc"] = d.unit_auroc.float().contiguous()
    blob = save(tensors)
    meta = d.to_json()
    meta["sha256"] = digest(tensors, _digest_numbers(meta))
    atomic_write(out / "direction.safetensors", lambda f: f.write(blob))
    text = (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode()
    atomic_write(out / "direction.json", lambda f: f.write(text))
    stamp(out, "direction")
    return out


def load_direction(path: str | os.PathLike) -> Direction:
    """A saved direction from its folder (or its direction.json / .safetensors file).

    Read with dissect.runs.safe (regular files inside the folder, bounded size) and checked:
    every key of its type, sigma and norm finite and > 0, a 1-D finite vector as long as
    `units`, and the digest of tensors and numbers; anything else is one DirectionError."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes
    from dissect.runs import safe
    from dissect.runs.digest import verify
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    meta_path, tensor_path = folder / "direction.json", folder / "direction.safetensors"
    if not os.path.lexists(meta_path) or not os.path.lexists(tensor_path):
        raise DirectionError(f"'{path}' holds no saved direction (direction.json + "
                             "direction.safetensors); make one with python -m dissect direction "
                             "... --out DIR")
    fix = "make it again with python -m dissect direction ... --out DIR"
    opts = {"error": DirectionError, "owner": f"direction '{folder}'", "fix": fix}
    meta = safe.read_json(meta_path, folder, limit=safe.MB, **opts)
    blob = safe.read_bytes(tensor_path, folder, limit=256 * safe.MB, **opts)
    try:
        t = load_bytes(blob)
    except (SafetensorError, ValueError, OSError) as e:
        raise DirectionError(f"direction.safetensors of direction '{folder}' cannot be read "
                             f"({str(e)[:80]}); {fix}") from None
    bad = _check_meta(meta, t)
    if bad:
        raise DirectionError(f"direction.json of direction '{folder}' is damaged: {bad}; {fix}")
    verify(meta.get("sha256"), tensors=t, numbers=_digest_numbers(meta),
           what=f"the direction in '{folder}'", fix=fix, error=DirectionError)
    known = {"layer", "concept", "method", "pooling", "auroc_heldout", "norm", "sigma", "model",
             "weights", "n_pos", "n_neg", "source", "units", "sha256"}
    return Direction(t["direction"].float(), meta["layer"], meta["concept"], meta["method"],
                     meta.get("pooling", "max"),
                     float("nan") if meta["auroc_heldout"] is None else float(meta["auroc_heldout"]),
                     float(meta["norm"]), float(meta["sigma"]), meta.get("model", ""),
                     str(meta.get("weights", "")), int(meta.get("n_pos", 0)),
                     int(meta.get("n_neg", 0)), meta.get("source", ""), t.get("unit_auroc"),
                     {k: v for k, v in meta.items() if k not in known})


def _check_meta(meta, t: dict) -> str | None:
    """What is wrong with a direction's JSON and tensors, or None."""
    if not isinstance(meta, dict):
        return f"it is a JSON {type(meta).__name__}, not an object"
    types_ = {"layer": str, "concept": str, "method": str,
              "auroc_heldout": (int, float, type(None)), "norm": (int, float),
              "sigma": (int, float), "units": int}
    for key, kind in types_.items():
        if key not in meta:
            return f"key '{key}' is missing"
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            return f"key '{key}' is {meta[key]!r}, not a {getattr(kind, '__name__', 'number')}"
    for key in ("pooling", "model", "weights", "source"):
        if key in meta and not isinstance(meta[key], str):
            return f"key '{key}' is {meta[key]!r}, not a string"
    for key in ("n_pos", "n_neg"):
        if key in meta and (not isinstance(meta[key], int) or meta[key] < 0):
            return f"key '{key}' is {meta[key]!r}, not a count"
    for key in ("norm", "sigma"):
        if not (np.isfinite(meta[key]) and meta[key] > 0):
            return f"{key} is {meta[key]}, it must be finite and > 0"
    vec = t.get("direction")
    if vec is None:
        return "direction.safetensors has no tensor 'direction'"
    if vec.ndim != 1 or vec.numel() != meta["units"]:
        return (f"its tensor has shape {list(vec.shape)}, expected [{meta['units']}] (one value "
                "per unit)")
    if not bool(torch.isfinite(vec).all()) or not float(vec.norm()) > 0:
        return "its tensor holds NaN, infinity or only zeros"
    ua = t.get("unit_auroc")
    if ua is not None and tuple(ua.shape) != tuple(vec.shape):
        return f"unit_auroc has shape {list(ua.shape)}, expected {list(vec.shape)}"
    return None


def check_direction(d: Direction, lm, layer: str | None = None, channels: int | None = None) -> None:
    """DirectionError naming both sides when `d` was made for another model, layer or width."""
    made = f"{d.model} (weights {d.weights}) layer {d.layer}"
    if d.model and (d.model != lm.name or (d.weights and str(d.weights) != str(lm.weights))):
        raise DirectionError(f"this direction was made for {made}, not {lm.name} (weights "
                             f"{lm.weights}); make one for this model with python -m dissect "
                             f"direction --model {lm.name} ...")
    if layer is not None and layer != d.layer:
        raise DirectionError(f"this direction was made for {made}, not layer {layer}; make one "
                             f"at {layer} or steer at {d.layer}")
    if channels is not None and channels != d.vector.numel():
        raise DirectionError(f"this direction has {d.vector.numel()} units but {lm.name} layer "
                             f"{d.layer} has {channels}; make it again for this model")



__all__ = ["Contrast", "Direction", "contrast_from_probe", "contrast_from_folders", "fit",
           "paired_direction", "cosine", "save_direction", "load_direction", "check_direction",
           "METHODS", "MIN_POSITIVES", "DirectionError"]
