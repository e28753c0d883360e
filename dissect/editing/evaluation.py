"""ToyWorld data for rewriting, and Santurkar et al.'s benchmark: % of errors corrected.

    ex = exemplars("sea", "snow", n=3, seed=7, scene="beach")      # Pairs: clean, restyled, masks
    held = heldout("sea", ["snow", "wood"], seed=1007, n=400)       # the same for new scenes
    table = corrected_table(lm, held, ex_scene, predict_before, predict_after)

% corrected = (errors before − errors after) / errors before, over held-out restyled images
that the clean model gets right on their clean version, split by the exemplars' class vs other
classes that contain the concept, and by the exemplars' style vs held-out styles (floored at
−100%, as in EditingClassifiers' `evaluate_rewrite_effect`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from dissect.errors import RewriteError
from dissect.toyworld.generate import render
from dissect.toyworld.styles import check_style
from dissect.toyworld.world import OBJECTS, SCENE_NAMES, SCENES

MIN_AREA = 0.04          # an exemplar's concept covers at least this share of the image


def _tensor(rgbs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255


@dataclass
class Pairs:
    """Scenes rendered clean and with the concept restyled, with the concept's masks."""
    concept: str
    index: list[int]                         # image numbers in world `seed`
    seed: int
    scenes: np.ndarray                       # int64 [N]
    clean: torch.Tensor                      # N×3×224×224 in [0, 1]
    masks: torch.Tensor                      # N×224×224 bool
    styled: dict[str, torch.Tensor] = field(default_factory=dict)   # style -> N×3×224×224


def concept_check(concept: str) -> int:
    if concept not in OBJECTS:
        raise RewriteError(f"unknown concept '{concept}': choose a ToyWorld object "
                           f"({', '.join(OBJECTS)})")
    return OBJECTS.index(concept) + 1


def scenes_with(concept: str) -> list[str]:
    return [s for s, objs in SCENES.items() if concept in objs]


def exemplars(concept: str, style: str, n: int, seed: int = 7, scene: str | None = None,
              search: int | None = None, index: Sequence[int] | None = None) -> Pairs:
    """`n` images of world `seed` of class `scene` (default: the first class that contains the
    concept; "any": every class) where the concept covers ≥ MIN_AREA; or exactly the images
    `index`."""
    cid = concept_check(concept)
    check_style(style)
    if n < 1:
        raise RewriteError(f"--exemplars {n}: give at least 1 exemplar")
    scene = scene or (scenes_with(concept) or [None])[0]
    if scene == "any":
        scene = None
    if scene is not None and scene not in SCENE_NAMES:
        raise RewriteError(f"unknown class '{scene}': choose one of {', '.join(SCENE_NAMES)}")
    search = search or max(400, 60 * n)
    picked, samples = [], []
    for i in (index if index is not None else range(search)):
        s = render(seed, int(i))
        if (s.obj == cid).mean() >= (MIN_AREA if index is None else 1e-9) and \
                (index is not None or scene is None or SCENE_NAMES[s.scene] == scene):
            picked.append(int(i))
            samples.append(s)
        elif index is not None:
            raise RewriteError(f"exemplar image {i} of world {seed} does not show '{concept}'; "
                               "choose images that contain the concept")
        if len(picked) == n:
            break
    if len(picked) < n:
        raise RewriteError(f"only {len(picked)} image(s) of class '{scene}' show '{concept}' "
                           f"among the first {search} of world {seed}; ask for fewer exemplars "
                           "or another class")
    return _pairs(concept, seed, picked, samples, [style])


def heldout(concept: str, styles: Sequence[str], seed: int = 1007, n: int = 400) -> Pairs:
    """Images 0..n-1 of world `seed` that show the concept, clean and in each style."""
    cid = concept_check(concept)
    picked, samples = [], []
    for i in range(n):
        s = render(seed, i)
        if (s.obj == cid).any():
            picked.append(i)
            samples.append(s)
    return _pairs(concept, seed, picked, samples, styles)


def _pairs(concept, seed, picked, samples, styles) -> Pairs:
    cid = OBJECTS.index(concept) + 1
    p = Pairs(concept, picked, seed, np.array([s.scene for s in samples], np.int64),
              _tensor([s.rgb for s in samples]),
              torch.from_numpy(np.stack([s.obj == cid for s in samples])))
    for st in styles:
        p.styled[st] = _tensor([render(seed, i, restyle=f"{concept}:{st}").rgb for i in picked])
    return p


@torch.no_grad()
def predict(lm, x: torch.Tensor, batch_size: int = 100) -> np.ndarray:
    out = [lm.model(lm.normalize(x[s:s + batch_size].to(lm.device))).argmax(1).cpu()
           for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def corrected(errors_before: int, errors_after: int) -> float:
    if errors_before == 0:
        return float("nan")
    return max(-1.0, (errors_before - errors_after) / errors_before)


def corrected_table(held: Pairs, exemplar_scene: int, exemplar_style: str,
                    clean_pred: np.ndarray, before: dict[str, np.ndarray],
                    after: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Rows: method × style group × class group; errors before/after and % corrected.

    before[style] = predictions of the original model on held.styled[style];
    after[method][style] = the same for each edited model.
    """
    y = held.scenes
    ok = clean_pred == y
    rows = []
    for method, preds in after.items():
        for sgroup, styles in (("exemplar style", [exemplar_style]),
                               ("held-out styles", [s for s in held.styled if s != exemplar_style])):
            for cgroup, sel in (("exemplar class", y == exemplar_scene),
                                ("other classes", y != exemplar_scene), ("all", y >= 0)):
                eb = ea = n = 0
                for st in styles:
                    m = ok & sel
                    n += int(m.sum())
                    eb += int((before[st][m] != y[m]).sum())
                    ea += int((preds[st][m] != y[m]).sum())
                if not styles:
                    continue
                rows.append({"method": method, "styles": sgroup, "classes": cgroup, "n": n,
                             "errors_before": eb, "errors_after": ea,
                             "corrected": corrected(eb, ea)})
    return pd.DataFrame(rows)


def clean_accuracy(lm, seed: int = 1000, n: int = 400) -> tuple[torch.Tensor, np.ndarray]:
    """Clean images 0..n-1 of world `seed` and their scenes (for the accuracy check)."""
    samples = [render(seed, i) for i in range(n)]
    return _tensor([s.rgb for s in samples]), np.array([s.scene for s in samples], np.int64)


__all__ = ["Pairs", "exemplars", "heldout", "predict", "corrected", "corrected_table",
           "clean_accuracy", "scenes_with", "concept_check"]
