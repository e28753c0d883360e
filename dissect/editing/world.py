"""An edit's net effect on whole unseen worlds, measured exactly as `ablate --set` measures.

    w = world_effect(lm, edited_lm, "sea", "snow", n=500, seed=3000)
    w["restyled"]["acc_before"], w["restyled"]["acc_after"]     # ablate --set toyworld:500
    w["restyled"]["corrected"], w["restyled"]["broken"]         #   --restyle sea:snow --seed 3000
    w["clean"]["acc_before"], w["clean"]["acc_after"]           # the same world, not restyled
    w["style_errors_corrected"]               # share of the snow-caused errors won back

Santurkar et al.'s protocol figure (dissect.editing.evaluation) counts only held-out images that show
the concept and that the clean model gets right. This one counts every image of a world the
edit never saw: world `seed` (N images) once clean and once with the concept
restyled, read through dissect.interventions.labelled (open_labelled_set + evaluate_set: the code path of
`python -m dissect ablate --model toyworld --weights EDIT/weights.safetensors --set toyworld:N
--restyle CONCEPT:STYLE --seed S`). Images corrected = wrong before the edit, right after;
images broken = right before, wrong after. The style-caused errors are the accuracy the restyle
costs the unedited model, acc(clean) − acc(restyled); the share corrected is
(acc_after(restyled) − acc_before(restyled)) / that gap.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

WORLD_SEED = 3000      # a world no training, exemplar, held-out or second-moment image comes from
WORLD_IMAGES = 500


def set_predictions(lm, concept: str, style: str | None, n: int, seed: int,
                    batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of `lm` on ToyWorld set toyworld:n of world `seed`, restyled
    `concept:style` when a style is given: the images and labels `ablate --set` reads."""
    from dissect.interventions.labelled import evaluate_set, open_labelled_set
    lset = open_labelled_set(f"toyworld:{n}", lm, seed=seed,
                             restyle=f"{concept}:{style}" if style else None)
    res = evaluate_set(lm, lset, [], batch_size=batch_size)
    return res.labels, res.pred_after


def _counts(y: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict:
    ok0, ok1 = before == y, after == y
    return {"images": int(len(y)), "acc_before": float(ok0.mean()), "acc_after": float(ok1.mean()),
            "corrected": int((~ok0 & ok1).sum()), "broken": int((ok0 & ~ok1).sum())}


def world_effect(lm, edited_lm, concept: str, style: str, n: int = WORLD_IMAGES,
                 seed: int = WORLD_SEED, before: dict | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Clean and restyled world `seed` (n images each), before and after the edit.

    `before`: {"clean": (labels, preds), "restyled": (labels, preds)} of `lm` when already
    known (see `world_before`), so several edits share one pass of the original model.
    """
    if progress:
        progress(f"whole-world check: toyworld:{n} of world {seed}, clean and {concept}:{style}")
    before = before or world_before(lm, concept, style, n, seed)
    out = {"world_seed": int(seed), "world_images": int(n), "restyle": f"{concept}:{style}",
           "command": ("python -m dissect ablate --model toyworld --weights "
                       f"EDIT/weights.safetensors --set toyworld:{n} --restyle {concept}:{style} "
                       f"--seed {seed}")}
    for name, sty in (("clean", None), ("restyled", style)):
        y, p0 = before[name]
        y1, p1 = set_predictions(edited_lm, concept, sty, n, seed)
        assert np.array_equal(y, y1)
        out[name] = _counts(y, p0, p1)
    out.update(style_share(out))
    return out


def world_before(lm, concept: str, style: str, n: int = WORLD_IMAGES,
                 seed: int = WORLD_SEED) -> dict:
    """The unedited model's (labels, predictions) on the clean and the restyled world."""
    return {"clean": set_predictions(lm, concept, None, n, seed),
            "restyled": set_predictions(lm, concept, style, n, seed)}


def style_share(w: dict) -> dict:
    """style_errors (accuracy the restyle costs), style_errors_corrected (share won back by the
    edit) and clean_acc_lost (points of clean accuracy the edit costs)."""
    gap = w["clean"]["acc_before"] - w["restyled"]["acc_before"]
    gain = w["restyled"]["acc_after"] - w["restyled"]["acc_before"]
    return {"style_errors": gap,
            "style_errors_corrected": gain / gap if gap > 0 else float("nan"),
            "clean_acc_lost": w["clean"]["acc_before"] - w["clean"]["acc_after"]}


__all__ = ["world_effect", "world_before", "set_predictions", "style_share", "WORLD_SEED",
           "WORLD_IMAGES"]
