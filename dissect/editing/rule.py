"""Rewrite a ToyWorld rule ("snowy sea ↦ sea") into one layer, measure it, save the edit.

    cfg = RewriteConfig(layer="conv5", concept="sea", style="snow", exemplars=3)
    result = rewrite(cfg, progress=print)          # dict: rule, figures, tables
    write_edit(result, "edits/sea-snow")            # weights.safetensors, weights.json, edit.json

The second moment C of the layer's keys over the probe set is cached under
$DISSECT_CACHE/rewrite/ (keyed by the model's weights, the layer and the probe), so a second
rewrite of the same layer skips that pass. Held-out figures follow Santurkar et al.: % of
errors corrected on new restyled scenes that the clean model gets right (dissect.editing.evaluation);
beside them, result["measures"]["world"] is the net effect on every image of an unseen world,
clean and restyled, as `ablate --set toyworld:N --restyle C:S --seed W` measures
(dissect.editing.world). `rank=0` chooses the rank on a validation world (choose_rank).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dissect.errors import RewriteError
from dissect.editing.rewrite import (apply_delta, edit_target, edited, finetune_local, keys_values,
                             rank_one_update, second_moment, SecondMoment)
from dissect.editing.evaluation import (clean_accuracy, corrected_table, exemplars, heldout, predict)
from dissect.toyworld.styles import STYLES, check_style
from dissect.toyworld.world import SCENE_NAMES


@dataclass
class RewriteConfig:
    layer: str = "conv6"
    concept: str = "sea"
    style: str = "snow"
    exemplars: int = 3
    exemplar_class: str | None = None     # default: the first scene that contains the concept
    exemplar_index: list[int] | None = None
    rank: int = 1
    model: str = "toyworld"
    weights: str = "default"
    seed: int = 7                          # exemplar world
    heldout_seed: int = 1007
    heldout: int = 400
    heldout_styles: list[str] | None = None   # default: every style
    probe_seed: int = 0                    # world for the second moment C
    probe_images: int = 1000
    baseline: str | None = None            # "finetune"
    finetune_steps: int = 400
    finetune_lr: float = 1e-3
    device: str = "cpu"
    world_seed: int = 3000                 # unseen world for the whole-world check
    world_images: int = 500                # 0: no whole-world check
    min_cover: float = 0.5                 # keys: cells the concept covers by at least this
    val_seed: int = 3001                   # rank 0 (auto): validation world for the choice
    val_images: int = 300
    clean_budget: float = 0.005            # rank 0: most clean accuracy a rank may lose there


def _log(progress, text):
    if progress:
        progress(text)


def load(cfg: RewriteConfig):
    from dissect.models.registry import load_model
    lm = load_model(cfg.model, cfg.weights, device=cfg.device, seed=0)
    names = [n.lower() for n in lm.class_names]
    if names != [s.lower() for s in SCENE_NAMES]:
        raise RewriteError(f"rewrite measures on ToyWorld scenes, so the model's classes must be "
                           f"ToyWorld's ({', '.join(SCENE_NAMES)}); use --model toyworld")
    return lm


def _weights_id(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def moment_cache_dir() -> Path:
    from dissect.toyworld import cache_root
    return cache_root().parent / "rewrite" / "moments"


def cached_moment(lm, target, seed: int, n: int, batch_size: int = 50,
                  progress=None) -> tuple[SecondMoment, bool]:
    """C of `target`'s keys over ToyWorld images 0..n-1 of world `seed`; (moment, from_cache)."""
    from safetensors.torch import load_file, save_file
    from dissect.toyworld.generate import render
    key = f"{lm.name}-{_weights_id(lm.model)}-{target.name}-tw{seed}-n{n}"
    path = moment_cache_dir() / f"{key}.safetensors"
    if path.is_file():
        try:
            st = load_file(str(path))
            return SecondMoment().load_state_dict(st), True
        except Exception:        # a damaged cache file is recomputed
            pass
    _log(progress, f"second moment of {target.name}'s keys over {n} images of world {seed}")

    def batches():
        for s in range(0, n, batch_size):
            rgb = np.stack([render(seed, i).rgb for i in range(s, min(n, s + batch_size))])
            yield torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    mom = second_moment(lm, target, batches())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in mom.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return mom, False


def rewrite(cfg: RewriteConfig, progress: Callable[[str], None] | None = None,
            lm=None) -> dict:
    """Run one rewrite (and the fine-tuning baseline when asked); returns the figures and the
    edited model (key "model": a LoadedModel copy; the original is untouched)."""
    check_style(cfg.style)
    if cfg.rank < 0:
        raise RewriteError(f"--rank {cfg.rank}: give a rank of at least 1, or auto")
    if not 0 < cfg.min_cover <= 1:
        raise RewriteError(f"--min-cover {cfg.min_cover}: give a share of a cell in (0, 1], "
                           "e.g. 0.5 (cells half covered by the concept)")
    if cfg.world_images < 0:
        raise RewriteError(f"--world-images {cfg.world_images}: give a number of images, or 0 "
                           "to skip the whole-world check")
    if cfg.baseline not in (None, "", "finetune"):
        raise RewriteError(f"unknown --baseline '{cfg.baseline}': the only baseline is finetune")
    lm = lm or load(cfg)
    target = edit_target(lm.model, cfg.layer)
    styles = cfg.heldout_styles or list(STYLES)
    for s in styles:
        check_style(s)
    if cfg.style not in styles:
        styles = [cfg.style] + styles
    _log(progress, f"exemplars: {cfg.exemplars} of {cfg.concept} drawn as {cfg.style}")
    ex = exemplars(cfg.concept, cfg.style, cfg.exemplars, seed=cfg.seed,
                   scene=cfg.exemplar_class, index=cfg.exemplar_index)
    mom, cached = cached_moment(lm, target, cfg.probe_seed, cfg.probe_images, progress=progress)
    keys, values = keys_values(lm, target, ex.styled[cfg.style], ex.clean, ex.masks,
                               min_cover=cfg.min_cover)
    choice = None
    if cfg.rank == 0:
        choice = choose_rank(lm, target, keys, values, mom.matrix(), cfg, progress)
    rank = choice["rank"] if choice else cfg.rank
    upd = rank_one_update(target.flat_weight(), keys, values, mom.matrix(), rank=rank)
    _log(progress, f"held-out scenes: {cfg.heldout} images of world {cfg.heldout_seed}")
    held = heldout(cfg.concept, styles, seed=cfg.heldout_seed, n=cfg.heldout)
    x_clean, y_clean = clean_accuracy(lm, cfg.heldout_seed + 1, cfg.heldout)
    clean_pred = predict(lm, held.clean)
    before = {s: predict(lm, held.styled[s]) for s in styles}
    acc0 = float((predict(lm, x_clean) == y_clean).mean())
    deltas = {"rewrite": upd.delta}
    if cfg.baseline == "finetune":
        _log(progress, f"fine-tuning baseline: {cfg.finetune_steps} steps on {target.name}")
        labels = torch.from_numpy(ex.scenes)
        deltas["finetune"] = finetune_local(lm, target, ex.styled[cfg.style], labels,
                                            steps=cfg.finetune_steps, lr=cfg.finetune_lr)
    after, accs = {}, {}
    for method, d in deltas.items():
        with edited(lm.model, target, d):
            after[method] = {s: predict(lm, held.styled[s]) for s in styles}
            accs[method] = float((predict(lm, x_clean) == y_clean).mean())
    ex_scene = int(np.bincount(ex.scenes).argmax())
    table = corrected_table(held, ex_scene, cfg.style, clean_pred, before, after)
    edited_lm = copy.deepcopy(lm)
    apply_delta(edit_target(edited_lm.model, target.name), upd.delta)
    figures = {"clean_acc_before": acc0, "clean_acc_after": accs["rewrite"],
               "keys": int(keys.shape[1]), "key_dim": int(keys.shape[0]),
               "fit_mse_before": upd.fit_before, "fit_mse_after": upd.fit_after,
               "rank": upd.rank, "moment_images": cfg.probe_images, "moment_cached": cached,
               "heldout_images": len(held.index), "clean_images": int(len(y_clean))}
    if "finetune" in accs:
        figures["finetune_clean_acc_after"] = accs["finetune"]
    world = None
    if cfg.world_images:
        from dissect.editing.world import world_effect
        world = world_effect(lm, edited_lm, cfg.concept, cfg.style, cfg.world_images,
                             cfg.world_seed, progress=progress)
    measures = side_by_side(table, cfg, world)
    return {"config": asdict(cfg), "rule": f"{cfg.concept} drawn as {cfg.style} -> {cfg.concept}",
            "measures": measures,
            "layer": cfg.layer, "weight": target.weight_name, "rank": rank,
            "rank_choice": choice,
            "exemplar_images": ex.index, "exemplar_world": cfg.seed,
            "exemplar_class": SCENE_NAMES[ex_scene], "styles": styles,
            "figures": figures, "heldout": table.to_dict("records"), "model": edited_lm,
            "delta": upd.delta}


AUTO_RANKS = (1, 2, 4, 8)


def choose_rank(lm, target, keys, values, C, cfg: RewriteConfig, progress=None) -> dict:
    """Rank by held-out gain: of AUTO_RANKS, the one that wins back the most restyled accuracy
    on validation world `cfg.val_seed` (never the world reported) while losing at most
    `cfg.clean_budget` of its clean accuracy; rank 1 when none keeps to the budget."""
    from dissect.editing.world import world_before, world_effect
    _log(progress, f"choosing the rank on validation world {cfg.val_seed} "
                   f"({cfg.val_images} images, clean and restyled)")
    before = world_before(lm, cfg.concept, cfg.style, cfg.val_images, cfg.val_seed)
    rows = []
    for r in AUTO_RANKS:
        upd = rank_one_update(target.flat_weight(), keys, values, C, rank=r)
        with edited(lm.model, target, upd.delta):
            w = world_effect(lm, lm, cfg.concept, cfg.style, cfg.val_images, cfg.val_seed,
                             before=before)
        gain = w["restyled"]["acc_after"] - w["restyled"]["acc_before"]
        rows.append({"rank": r, "restyled_gain": gain, "clean_lost": w["clean_acc_lost"]})
    ok = [row for row in rows if row["clean_lost"] <= cfg.clean_budget + 1e-9]
    best = max(ok, key=lambda row: (row["restyled_gain"], -row["rank"])) if ok else rows[0]
    return {"rank": best["rank"], "validation_world": cfg.val_seed,
            "validation_images": cfg.val_images, "clean_budget": cfg.clean_budget,
            "candidates": rows}


def side_by_side(table, cfg: RewriteConfig, world: dict | None) -> dict:
    """The protocol figure (Santurkar et al.) beside the whole-world net effect."""
    row = table[(table["method"] == "rewrite") & (table["styles"] == "exemplar style")
                & (table["classes"] == "all")].iloc[0]
    out = {"protocol": {
        "what": (f"held-out images 0..{cfg.heldout - 1} of world {cfg.heldout_seed} that show "
                 f"{cfg.concept} and that the clean model gets right, {cfg.concept} drawn as "
                 f"{cfg.style}: % of errors corrected (Santurkar et al. 2021)"),
        "images": int(row["n"]), "errors_before": int(row["errors_before"]),
        "errors_after": int(row["errors_after"]), "corrected": float(row["corrected"])}}
    if world is not None:
        out["world"] = {"what": (f"every image of unseen world {world['world_seed']} "
                                 f"({world['world_images']}), clean and with {cfg.concept} drawn "
                                 f"as {cfg.style}: share of the style-caused errors corrected, as "
                                 "ablate --set --restyle measures"), **world}
    return out


def summary(result: dict, method: str = "rewrite") -> dict:
    """% corrected for (exemplar style / held-out styles) × (exemplar class / other classes)."""
    out = {}
    for r in result["heldout"]:
        if r["method"] == method:
            out[f"{r['styles']} / {r['classes']}"] = r["corrected"]
    return out


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items() if k not in ("model", "delta")}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return None if not np.isfinite(obj) else round(obj, 6)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return _json_safe(float(obj))
    return obj


def edit_json(result: dict) -> dict:
    return _json_safe(result)


def check_edit_out(out: str | os.PathLike, source_weights: str | None, weights: str | None,
                   overwrite: bool) -> tuple[Path, Path | None]:
    """(EDIT resolved, the source weights file) when EDIT may be written: never the folder of
    the original weights, only an edit folder (with `overwrite`), never a run or anything else
    (dissect.runs.marker). The rewrite command calls it before any work."""
    from dissect.runs.marker import prepare_out
    out = Path(out).expanduser().resolve()
    src = Path(source_weights).expanduser().resolve() if source_weights and \
        os.path.isfile(source_weights) else None
    if src is None and (weights or "default") in ("default", "DEFAULT"):
        from dissect.toyworld.model import DEFAULT_WEIGHTS
        src = DEFAULT_WEIGHTS.resolve()
    if src is not None and (src.parent == out or out in src.parents):
        raise RewriteError(f"--out {out} holds the original weights {src}; edited weights never "
                           "overwrite the original: choose another --out folder")
    prepare_out(out, "edit", overwrite, clear=False)   # only an edit folder is ever replaced
    return out, src


def write_edit(result: dict, out: str | os.PathLike, source_weights: str | None = None,
               overwrite: bool = False) -> Path:
    """EDIT/weights.safetensors (+ weights.json sidecar) and EDIT/edit.json, atomically.

    Refuses an EDIT that holds the source weights (edited weights never overwrite the original)
    and an existing EDIT unless `overwrite`.
    """
    from dissect.runs.marker import prepare_out, stamp
    from dissect.toyworld.model import save_weights
    out, src = check_edit_out(out, source_weights,
                              (result.get("config") or {}).get("weights", "default"), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        lm = result["model"]
        meta = dict(lm.meta or {})
        meta.update({"mean": list(lm.mean), "std": list(lm.std),
                     "edit": {"rule": result["rule"], "layer": result["layer"],
                              "rank": result["rank"], "from": str(src) if src else lm.weights}})
        save_weights(lm.model, tmp / "weights.safetensors", meta)
        from dissect.editing.files import weights_digest
        doc = dict(edit_json(result), weights_sha256=weights_digest(tmp / "weights.safetensors"))
        (tmp / "edit.json").write_text(json.dumps(doc, indent=2) + "\n")
        stamp(tmp, "edit")
        if out.exists():
            prepare_out(out, "edit", overwrite, clear=False)
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["RewriteConfig", "rewrite", "write_edit", "edit_json", "summary", "cached_moment"]
