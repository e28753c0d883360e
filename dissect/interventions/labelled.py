"""Labelled image sets for ablation, and per-class accuracy before/after an intervention.

    ls = open_labelled_set("toyworld:200", lm)        # ToyWorld scenes (labels = scene concepts)
    ls = open_labelled_set("folder:photos/", lm)      # ImageFolder layout: photos/<class>/*.jpg
    res = evaluate_set(lm, ls, [Intervention("conv6", (3, 9))])
    res.acc_before, res.acc_after, res.classes        # DataFrame: class, n, acc_*, balanced_*

Folder names are matched to the model's class names ignoring case, spaces, '_' and '-'.
Balanced accuracy per class is (recall + true-negative rate) / 2, as Bau et al. (PNAS 2020) use.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from dissect.errors import AblationError
from dissect.models.registry import LoadedModel



def norm_name(name: str) -> str:
    """"Tabby_Cat" -> "tabby cat" (case, '_', '-', '/' and spacing ignored)."""
    return re.sub(r"[\s_\-/]+", " ", str(name)).strip().lower()


@dataclass
class LabelledSet:
    """Images with one model class each. `load(i)` -> 3×H×W in [0, 1]."""
    spec: str
    class_names: list[str]                 # the model's class names (label = index into these)
    labels: np.ndarray                     # int64 [N]
    paths: list[str]
    load: Callable[[int], torch.Tensor]
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    source: object = None                  # the ToyWorld probe behind a toyworld set (else None)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(indices, images01 B×3×H×W) in set order."""
        for s in range(0, len(self), batch_size):
            idx = np.arange(s, min(s + batch_size, len(self)))
            yield idx, torch.stack([self.load(int(i)) for i in idx])


def class_index(lm: LoadedModel) -> dict[str, int]:
    return {norm_name(n): i for i, n in reversed(list(enumerate(lm.class_names)))}


MAX_SET = 20_000      # images a toyworld:N set may ask for (its world is built first)


def open_labelled_set(spec: str, lm: LoadedModel, *, seed: int = 0,
                      limit: int | None = None, restyle: str | None = None,
                      pair: str | None = None, max_images: int = MAX_SET,
                      progress: Callable[[int, int], None] | None = None,
                      list_folders: bool = True) -> LabelledSet:
    """`toyworld[:N]` or `folder:DIR` (a bare existing DIR works too); at most `max_images`.

    `list_folders=False` (the app): an error never lists the folder's sub-folders (the
    server's folder names are not shown to whoever reaches the page).

    `restyle="sea:snow"` (ToyWorld only): the same scenes with that concept in another style.
    `pair="sun"` (toyworld only): N scenes with and without the sun; a twin that completes no
    single scene is left out (counted in `skipped`).
    `progress(done, total)`: called while a ToyWorld is built (it may raise to stop the build).
    """
    kind, _, arg = spec.partition(":")
    if limit is not None and limit < 1:
        raise AblationError(f"--limit {limit} must be a positive number of images")
    if restyle and kind != "toyworld":
        raise AblationError(f"--restyle {restyle} works on ToyWorld sets only (toyworld:N), "
                            f"not on '{spec}'")
    if kind == "toyworld":
        from dissect.errors import ProbeError
        from dissect.probes.registry import toyworld_size
        try:
            toyworld_size(spec, cap=max_images)
        except ProbeError as e:
            raise AblationError(str(e)) from None
        return _toyworld_set(spec, arg, lm, seed, limit, restyle, pair, progress)
    if pair is not None:
        raise AblationError(f"--pair {pair} needs a ToyWorld set (toyworld:N), not '{spec}'; "
                            "drop --pair")
    if kind == "folder" or (not arg and os.path.isdir(spec)):
        return _folder_set(spec, arg if kind == "folder" else spec, lm,
                           min(limit or max_images, max_images), list_folders)
    raise AblationError(f"unknown set '{spec}': use toyworld:N or folder:DIR (ImageFolder layout)")


def _folder_set(spec: str, root: str, lm: LoadedModel, limit: int | None,
                list_folders: bool = True) -> LabelledSet:
    if not os.path.isdir(root):
        raise AblationError(f"set folder '{root}' does not exist; give a folder with one "
                            "sub-folder per class (ImageFolder layout)")
    index = class_index(lm)
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    matched = {d: index[norm_name(d)] for d in folders if norm_name(d) in index}
    if not matched:
        some = ", ".join(lm.class_names[:5])
        raise AblationError(
            f"no sub-folder of '{root}' names a class of {lm.name} ("
            + (f"folders: {', '.join(folders[:6]) or 'none'}; " if list_folders else "")
            + f"classes are e.g. {some}); rename the folders to class names")
    paths, labels, skipped = [], [], 0
    for d in folders:
        if d not in matched:
            continue
        for f in sorted(os.listdir(os.path.join(root, d))):
            path = os.path.join(root, d, f)
            if not os.path.isfile(path) or f.startswith("."):
                continue
            if _readable(path):
                paths.append(path)
                labels.append(matched[d])
            else:
                skipped += 1
    if limit:
        paths, labels = paths[:limit], labels[:limit]
    if not paths:
        raise AblationError(f"the class folders of '{root}' hold no readable images; put PNG or "
                            "JPEG files in them")
    left = ", ".join(sorted(set(folders) - set(matched))) if list_folders else "some"
    notes = [f"folders without a matching class, left out: {left}"] \
        if len(matched) < len(folders) else []
    if skipped:
        notes.append(f"{skipped} file(s) that are not readable images, left out")
    from dissect.interventions.ablation import image_tensor
    out = LabelledSet(spec, list(lm.class_names), np.asarray(labels, np.int64), paths,
                      lambda i: image_tensor(lm, paths[i]), skipped=skipped, notes=notes)
    return out


def _readable(path: str) -> bool:
    """True when PIL recognises the file as an image (reads the header only)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:
        return False


def _toyworld_set(spec: str, arg: str, lm: LoadedModel, seed: int, limit: int | None,
                  restyle: str | None = None, pair: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> LabelledSet:
    from dissect.probes.registry import open_probe
    try:
        n = int(arg) if arg else None
    except ValueError:
        raise AblationError(f"bad set '{spec}': use toyworld:N with N a number of images") from None
    probe = open_probe(f"toyworld:{n}" if n else "toyworld", seed=seed, categories=["scene"],
                       restyle=restyle, pair=pair, progress=progress)
    concepts = probe.concepts.set_index("concept")["name"].to_dict()
    index = class_index(lm)
    count = len(probe) if not limit else min(limit, len(probe))
    rows = getattr(probe, "rows", None)
    labels, keep = [], []
    for i in range(count):
        if rows is not None and "scene" in rows:        # Broden index.csv: "52" or "52;53"
            ids = [int(float(c)) for c in str(rows["scene"].iloc[i]).split(";") if c.strip()
                   and c.strip().lower() != "nan"]
        else:
            ids = np.asarray(probe[i].scalar.get("scene", [])).ravel().tolist()
        names = [norm_name(concepts.get(int(c), "")) for c in ids if int(c) > 0]
        hit = next((index[nm] for nm in names if nm in index), None)
        if hit is not None:
            labels.append(hit)
            keep.append(i)
    if not keep:
        raise AblationError(f"no ToyWorld scene label matches a class of {lm.name}; "
                            "use --model toyworld for --set toyworld:N")
    paths = [str(probe.images.iloc[i]["path"]) if "path" in probe.images else str(i) for i in keep]
    return LabelledSet(spec, list(lm.class_names), np.asarray(labels, np.int64), paths,
                       lambda j: probe[keep[j]].image, skipped=count - len(keep), source=probe)


# ---- metrics ---------------------------------------------------------------------------------

def per_class(labels: np.ndarray, pred: np.ndarray, classes: Sequence[int]) -> pd.DataFrame:
    """n, accuracy (recall) and balanced accuracy (recall + TNR)/2 for each class in `classes`."""
    rows = []
    for c in classes:
        pos = labels == c
        n, neg = int(pos.sum()), int((~pos).sum())
        recall = float((pred[pos] == c).mean()) if n else float("nan")
        tnr = float((pred[~pos] != c).mean()) if neg else float("nan")
        balanced = np.nanmean([recall, tnr]) if n or neg else float("nan")
        rows.append((c, n, recall, float(balanced)))
    return pd.DataFrame(rows, columns=["index", "n", "acc", "balanced"])


@dataclass
class SetResult:
    acc_before: float
    acc_after: float
    classes: pd.DataFrame          # class, index, n, acc_before, acc_after, balanced_before, balanced_after, delta
    pred_before: np.ndarray
    pred_after: np.ndarray
    labels: np.ndarray

    def to_json(self) -> dict:
        cols = ["class", "n", "acc_before", "acc_after", "balanced_before", "balanced_after"]
        return {"acc_before": round(self.acc_before, 6), "acc_after": round(self.acc_after, 6),
                "classes": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                            for r in self.classes[cols].to_dict("records")]}

    def most_changed(self, n: int = 5) -> pd.DataFrame:
        return self.classes.reindex(self.classes["delta"].abs().sort_values(ascending=False).index).head(n)


def compare_predictions(labels: np.ndarray, before: np.ndarray, after: np.ndarray,
                        names: Sequence[str]) -> SetResult:
    classes = sorted(set(labels.tolist()))
    b, a = per_class(labels, before, classes), per_class(labels, after, classes)
    df = pd.DataFrame({
        "class": [names[c] for c in classes], "index": classes, "n": b["n"],
        "acc_before": b["acc"], "acc_after": a["acc"],
        "balanced_before": b["balanced"], "balanced_after": a["balanced"],
    })
    df["delta"] = df["acc_after"] - df["acc_before"]
    df["n"] = df["n"].astype(int)
    return SetResult(float((before == labels).mean()), float((after == labels).mean()), df,
                     before, after, labels)


class SetCache:
    """A labelled set run once through the model, its prefix kept so new interventions are cheap.

        cache = SetCache(lm, ls, layers=["layer4"])       # one forward over the set
        res = cache.evaluate([Intervention("layer4", (3,))])   # only the suffix runs
    Replays are kept in memory up to `budget` bytes of cached tensors; beyond that batches are
    re-run from the input.
    """

    def __init__(self, lm: LoadedModel, lset: LabelledSet, layers: Sequence[str],
                 batch_size: int = 32, budget: int = 512 * 2 ** 20):
        from dissect.interventions.replay import Replay
        self.lm, self.lset, self.layers = lm, lset, list(layers)
        self.batches: list = []
        before, used = [], 0
        for idx, x01 in lset.batches(batch_size):
            x = lm.normalize(x01.to(lm.device))
            rp = Replay(lm.model, self.layers)
            before.append(rp.record(x).argmax(1).cpu().numpy())
            size = sum(t.numel() * t.element_size() for outs in rp._cached.values()
                       for v, _m in outs for t in _tensors(v) if t.stride() != (0,) * t.dim())
            used += size
            self.batches.append(rp if used <= budget else x01)
        self.pred_before = np.concatenate(before) if before else np.zeros(0, np.int64)

    @torch.no_grad()
    def evaluate(self, interventions) -> SetResult:
        from dissect.interventions.ablation import ablate
        from dissect.interventions.replay import Replay
        after = []
        with ablate(self.lm.model, interventions):
            for b in self.batches:
                if isinstance(b, Replay):
                    out = b.run()
                else:
                    out = self.lm.model(self.lm.normalize(b.to(self.lm.device)))
                after.append(out.argmax(1).cpu().numpy())
        pred_after = np.concatenate(after) if after else np.zeros(0, np.int64)
        return compare_predictions(self.lset.labels, self.pred_before, pred_after,
                                   self.lset.class_names)


def _tensors(obj) -> list[torch.Tensor]:
    from dissect.interventions.replay import _tensors as t
    return t(obj)


def evaluate_set(lm: LoadedModel, lset: LabelledSet, interventions, batch_size: int = 32) -> SetResult:
    """Accuracy per class before and after `interventions` over a labelled set.

    Each batch runs once in full; the "after" pass re-runs only the layers after the first edit.
    """
    from dissect.interventions.ablation import ablate
    from dissect.interventions.replay import Replay
    if len(lset) == 0:
        raise AblationError(f"set '{lset.spec}' has no images")
    layers = sorted({iv.layer for iv in interventions})
    before, after = [], []
    with torch.no_grad():
        for _idx, x01 in lset.batches(batch_size):
            x = lm.normalize(x01.to(lm.device))
            if not layers:
                p = lm.model(x).argmax(1).cpu().numpy()
                before.append(p)
                after.append(p)
                continue
            rp = Replay(lm.model, layers)
            before.append(rp.record(x).argmax(1).cpu().numpy())
            with ablate(lm.model, interventions):
                after.append(rp.run().argmax(1).cpu().numpy())
    return compare_predictions(lset.labels, np.concatenate(before), np.concatenate(after),
                               lset.class_names)
