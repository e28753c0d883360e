"""Formulas for every unit: chosen on one half, checked on the other, written into units.csv.

    df, summary = explain_units(acts, thresholds, index, names, choose=c, measure=m)
    summary = explain_run("runs/r18", layers=["layer4"], length=3, beam=5, null=0)

Per unit (all IoUs over the probe set at the unit's threshold and mask resolution):
- `formula_searched`: the beam's best formula on all images, `formula_searched_iou` its IoU;
- held-out: the same search on the choosing half (dissect.probes.splits.heldout_halves) picks a
  formula and a single concept; both are measured on the other half. When the formula does
  not beat the single concept there (significantly, over chance: see `_heldout`), the
  unit's formula is its single label (`label` in units.csv) and `formula_fallback` is True;
- `formula`, `formula_iou` (all images), `formula_iou_heldout`, `formula_length`;
- `formula_label_iou_heldout`: the single concept's held-out IoU it was compared with;
- `formula_exact`, `formula_exact_iou`: where the first beam's concepts overlap, the best
  formula of an exhaustive search over a bounded vocabulary (it contains the beam's answer);
- `formula_p_value` (with null > 0): the held-out IoU against the same procedure on image
  permutations (dissect.formulas.null).
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dissect.formulas.grammar import FormulaError, concepts_of, to_text
from dissect.formulas.labels import LabelIndex
from dissect.formulas.null import image_permutations, permutation_p_value
from dissect.formulas.search import Problem, SearchStats, _ratio, beam_search, exhaustive
from dissect.formulas.unitmask import active_pixels

MAX_LENGTH = 10
COLUMNS = ["formula", "formula_iou", "formula_iou_heldout", "formula_length",
           "formula_fallback", "formula_searched", "formula_searched_iou",
           "formula_label_iou_heldout", "formula_exact", "formula_exact_iou", "formula_p_value"]


def check_options(length: int, beam: int, null: int = 0) -> None:
    """FormulaError for options out of range."""
    if not 1 <= length <= MAX_LENGTH:
        raise FormulaError(f"--length {length}: a formula has 1 to {MAX_LENGTH} concepts "
                           "(compexp's default is 3)")
    if beam < 1:
        raise FormulaError(f"--beam {beam}: the beam keeps at least 1 formula (default 5)")
    if null < 0:
        raise FormulaError(f"--null {null}: the number of permutations is 0 or more (e.g. 5)")


class _Halves:
    """A unit's problems on all images, the choosing half and the measuring half."""

    def __init__(self, index, img, pix, choose, measure, sizes):
        pairs = index.lookup(img, pix)      # |F ∩ c| caches depend on the subset only
        self.all = Problem.build(index, img, pix, None, "all", sizes["all"], pairs)
        self.a = Problem.build(index, img, pix, choose, "A", sizes["A"], pairs)
        self.b = Problem.build(index, img, pix, measure, "B", sizes["B"], pairs)


def _heldout(h: _Halves, length: int, beam: int, stats: SearchStats, seed: int = 0):
    """Search on A, measure on B: (formula, its IoU on B, single concept, its IoU on B, beats).

    `beats`: the formula beats the single concept on B, significantly: its IoU gain over
    chance exceeds the concept's in ≥ 95% of image-bootstrap resamples of B (chance: the IoU
    the unit's active pixels would have if they fell anywhere in their images). Without the
    chance term, a meaningless unit would prefer ever larger formulas: IoU grows with a
    concept's area when the active pixels ignore it.
    """
    best, info = beam_search(h.a, length, beam)
    stats.add(info["stats"])
    if best is None:
        return None, 0.0, None, 0.0, False
    single = info["first"][0].formula
    f_b, l_b = h.b.score(best.formula).iou, h.b.score(single).iou
    beats = len(best.formula) > 1 and f_b > l_b and \
        _significant_gain(h.b, best.formula, single, seed)
    return best.formula, f_b, single, l_b, beats


def _significant_gain(prob: Problem, f, g, seed: int, resamples: int = 200,
                      level: float = 0.95) -> bool:
    """Does f's chance-corrected IoU beat g's in ≥ level of image-bootstrap resamples?"""
    images = np.flatnonzero(prob.subset) if prob.subset is not None else \
        np.arange(prob.index.n_images)
    pos = np.full(prob.index.n_images, -1, np.int64)
    pos[images] = np.arange(len(images))
    m_i = np.bincount(pos[prob.img], minlength=len(images)).astype(float)
    w = np.random.default_rng(seed).multinomial(
        len(images), np.full(len(images), 1 / len(images)), size=resamples).astype(float)
    hw = prob.index.n_pixels

    def corrected(formula):
        from dissect.formulas.labels import popcount
        size_i = popcount(prob.index.dense(formula)[images]).astype(float)
        inter_i = np.bincount(pos[prob.img[prob.on_m(formula)]], minlength=len(images))
        chance_i = size_i * m_i / hw
        inter, size, m, chance = (w @ v for v in (inter_i.astype(float), size_i, m_i, chance_i))
        return _ratio(inter, size + m - inter) - _ratio(chance, size + m - chance)

    return float(np.mean(corrected(f) > corrected(g))) >= level


def explain_units(acts: np.ndarray, thresholds: np.ndarray, index: LabelIndex,
                  names: Sequence[str], *, choose: np.ndarray, measure: np.ndarray,
                  length: int = 3, beam: int = 5, labels: Sequence[int] | None = None,
                  units: Sequence[int] | None = None, null: int = 0, seed: int = 0,
                  exact: bool = True, overlap: float = 0.2, vocab: int = 10,
                  progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Formula columns for the given units (all by default); see the module docstring.

    acts: [images, units, h, w] raw activations (the run's acts.npy); thresholds: T_k;
    labels: each unit's single-label concept column (-1: none; the fallback then uses the
    best single concept on all images).
    """
    check_options(length, beam, null)
    k_all = acts.shape[1]
    units = list(range(k_all)) if units is None else [int(u) for u in units]
    sizes = {"all": index.sizes(None), "A": index.sizes(choose), "B": index.sizes(measure)}
    perms = image_permutations(index.n_images, null, seed, [choose, measure]) if null else []
    stats, rows = SearchStats(), []
    checked = better = 0
    t0 = time.perf_counter()
    for u in tqdm(units, desc="formulas", unit="unit", disable=not progress):
        img, pix = active_pixels(acts[:, u], float(thresholds[u]), index.shape)
        h = _Halves(index, img, pix, choose, measure, sizes)
        best, info = beam_search(h.all, length, beam)
        stats.add(info["stats"])
        row = {"unit": u}
        if best is None:
            rows.append({**row, "formula": "", "formula_iou": 0.0, "formula_iou_heldout": 0.0,
                         "formula_length": 0, "formula_fallback": True, "formula_searched": "",
                         "formula_searched_iou": 0.0, "formula_label_iou_heldout": 0.0,
                         "formula_exact": "", "formula_exact_iou": np.nan,
                         "formula_p_value": np.nan})
            continue
        f_a, f_b, l_a, l_b, beats = _heldout(h, length, beam, stats, seed)
        fallback = not beats
        if fallback:
            lab = int(labels[u]) if labels is not None and labels[u] >= 0 else \
                info["first"][0].formula[0]
            chosen = h.all.score((lab,))
            heldout = l_b
        else:
            chosen, heldout = best, f_b
        row.update(formula=to_text(chosen.formula, names), formula_iou=chosen.iou,
                   formula_iou_heldout=heldout, formula_length=len(chosen.formula),
                   formula_fallback=bool(fallback),
                   formula_searched=to_text(best.formula, names), formula_searched_iou=best.iou,
                   formula_label_iou_heldout=l_b, formula_exact="", formula_exact_iou=np.nan)
        if exact and length > 1 and _overlapping(h.all, info["first"], overlap):
            words = _vocabulary(h.all, info, vocab)
            ex = exhaustive(h.all, words, length)
            checked += 1
            if ex is not None:
                row.update(formula_exact=to_text(ex.formula, names), formula_exact_iou=ex.iou)
                better += ex.iou > best.iou + 1e-12
        if perms:
            nulls = []
            for perm in perms:
                hn = _Halves(index, perm[img], pix, choose, measure, sizes)
                _, nf_b, _, nl_b, nbeats = _heldout(hn, length, beam, stats, seed)
                nulls.append(nf_b if nbeats else nl_b)
            row["formula_p_value"] = permutation_p_value(heldout, nulls)
        else:
            row["formula_p_value"] = np.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=["unit"] + COLUMNS)
    summary = {"units": len(units), "length": length, "beam": beam, "null": null,
               "seconds": round(time.perf_counter() - t0, 3),
               "formula_ious_naive": stats.naive, "formula_ious_bounded": stats.bounded,
               "formula_ious_computed": stats.exact, "pixel_passes": stats.pixel_passes,
               "fallback": int(df["formula_fallback"].sum()) if len(df) else 0,
               "exact_checked": checked, "exact_better": int(better)}
    return df, summary


def _overlapping(prob: Problem, first: list, threshold: float) -> bool:
    """Do the first beam's concepts overlap (|a∩b| ≥ threshold·min(|a|, |b|) for a pair)?"""
    cs = [sc.formula[0] for sc in first]
    for j, a in enumerate(cs):
        x = prob.index.intersections((a,), prob.subset, prob.subset_key)
        for b in cs[j + 1:]:
            small = min(prob.s[a], prob.s[b])
            if small and x[b] >= threshold * small:
                return True
    return False


def _vocabulary(prob: Problem, info: dict, size: int) -> list[int]:
    """The beam's concepts, then the unit's best single concepts and biggest overlaps."""
    words: list[int] = []
    for sc in info["beam"] + info["first"]:
        words += concepts_of(sc.formula)
    iou = prob.i / np.maximum(prob.s + prob.m - prob.i, 1)
    words += list(np.argsort(-iou, kind="stable")[:size])
    words += list(np.argsort(-prob.i, kind="stable")[:size])
    words = list(dict.fromkeys(int(w) for w in words if prob.s[w] > 0))
    return words[: max(size, len(concepts_of(info["beam"][0].formula)))]


# ----------------------------------------------------------------------------- run folders
def label_index(run, progress: bool = False) -> LabelIndex:
    """The run's packed concept masks: <run>/labels.npz, built from its probe when missing."""
    from dissect.errors import ProbeError
    from dissect.probes.registry import open_run_probe
    path = run.path / "labels.npz"
    concepts = run.concepts
    n = len(run.images)
    damage = ""
    if os.path.lexists(path):
        try:
            index = LabelIndex.load(path)          # checksum, shapes and ranges checked
            if index.n_images == n and index.n_concepts == len(concepts):
                return index
            damage = f"labels.npz is for {index.n_images} images, the run has {n}; "
        except (OSError, KeyError, ValueError) as e:
            damage = f"{e}; ".split("; delete it")[0] + "; "
    try:
        probe = open_run_probe(run)
        if len(probe) != n:
            raise ProbeError(f"it now has {len(probe)} images, the run used {n}")
        index = LabelIndex.from_probe(probe, concepts["concept"].to_numpy(), progress=progress)
    except ProbeError as e:
        spec = run.config.get("probe", "?")
        raise FormulaError(
            f"{damage}run {run.path} has no usable label data (labels.npz) and its probe "
            f"'{spec}' cannot be "
            f"read ({e}); restore the probe (`python -m dissect data broden --out DIR` for "
            f"Broden) or re-create the run with `python -m dissect run ... --probe {spec} "
            f"--out {run.path} --overwrite --explain`") from None
    index.save(path)
    return index


def explain_run(path, layers: Sequence[str] | None = None, length: int = 3, beam: int = 5,
                null: int = 0, seed: int = 0, units: Sequence[int] | None = None,
                heldout: str = "auto", exact: bool = True, progress: bool = False) -> dict:
    """Add the formula columns to units.csv of each layer (default: all); returns a summary
    per layer (also written to layers/<layer>/formulas.json)."""
    from dissect.errors import RunError
    from dissect.runs.folder import open_run
    from dissect.runs.atomic import write_csv, write_json
    from dissect.probes.splits import heldout_halves
    check_options(length, beam, null)
    run = open_run(path)
    if not run.complete:
        raise RunError(f"run {run.path} is {run.status}; finish it first (run the same "
                       "`python -m dissect run ...` command again to resume)")
    layers = list(layers or run.layers)
    for layer in layers:
        run.layer_dir(layer)                       # RunError naming the layers it has
    acts = {}
    for layer in layers:
        a = run.acts(layer)
        if a is None:
            raise FormulaError(
                f"run {run.path} kept no activations for '{layer}' (acts.npy; it was made with "
                f"--no-acts): re-create it with `python -m dissect run ... --out {run.path} "
                "--overwrite --explain` (without --no-acts)")
        acts[layer] = a
    index = label_index(run, progress)
    try:
        choose, measure = heldout_halves(run.images, seed, heldout)
    except ValueError as e:
        raise FormulaError(str(e)) from None
    concepts = run.concepts
    names = concepts["name"].astype(str).tolist()
    col_of = {int(c): j for j, c in enumerate(concepts["concept"])}
    out = {}
    for layer in layers:
        table = run.units(layer)
        if units is not None:
            bad = [u for u in units if not 0 <= int(u) < len(table)]
            if bad:
                raise FormulaError(f"--units {bad[0]}: layer '{layer}' has units 0.."
                                   f"{len(table) - 1}")
        lab = np.array([col_of.get(int(c), -1) if l else -1
                        for c, l in zip(table["concept"], table["label"])])
        a = np.asarray(acts[layer])                 # into RAM: per-unit reads are strided
        df, summary = explain_units(a, run.thresholds(layer), index, names, choose=choose,
                                    measure=measure, length=length, beam=beam, labels=lab,
                                    units=units, null=null, seed=seed, exact=exact,
                                    progress=progress)
        table = table.drop(columns=[c for c in COLUMNS if c in table.columns])
        merged = table.merge(df, on="unit", how="left")
        if null == 0:
            merged = merged.drop(columns=["formula_p_value"])
        for col, empty in (("formula", ""), ("formula_searched", ""), ("formula_exact", ""),
                           ("formula_length", 0)):
            merged[col] = merged[col].fillna(empty)
        merged["formula_length"] = merged["formula_length"].astype(int)
        write_csv(run.layer_dir(layer) / "units.csv", merged)
        summary.update(layer=layer, heldout=heldout, seed=seed,
                       heldout_images=int(measure.sum()))
        write_json(run.layer_dir(layer) / "formulas.json", summary)
        out[layer] = summary
    info = run.info                 # rewriting run.json tells the app to read units.csv again
    info.setdefault("formulas", {}).update(
        {layer: {k: s[k] for k in ("length", "beam", "null", "seed", "heldout")}
         for layer, s in out.items()})
    write_json(run.path / "run.json", info)
    return out


def formulas_summary(run, layer: str) -> dict | None:
    """layers/<layer>/formulas.json of a run, or None when formulas were never computed."""
    from dissect.runs.safe import read_json
    p = run.layer_dir(layer) / "formulas.json"
    return read_json(p, run.path, owner=f"run '{run.name}'",
                     fix="run `python -m dissect explain` again") if os.path.lexists(p) else None
