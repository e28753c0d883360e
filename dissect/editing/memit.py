"""Many rules at once (MEMIT for CNNs): spread the edits over a range of layers.

    rules = read_edits("rules.jsonl")     # {"concept": "sea", "style": "snow", "exemplars": 3}
    result = memit(cfg, rules, ["conv4", "conv5"], lam=None)

For each layer in order, the keys K of every rule are read under the model as already edited
at the earlier layers, the residual to the values (the layer's output on the originals) is
split evenly over the layers still to come, and ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ (MEMIT, Meng et al.
2023). The curve reports each rule's held-out accuracy and % of errors corrected, and the clean
accuracy, with the first 1, 2, ... rules applied.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dissect.errors import RewriteError
from dissect.editing.rewrite import (apply_delta, edit_target, keys_values, memit_update,
                             rank_one_update)
from dissect.editing.evaluation import clean_accuracy, corrected, exemplars, heldout, predict
from dissect.toyworld.styles import STYLES
from dissect.toyworld.world import OBJECTS, SCENE_NAMES

FIELDS = {"concept": str, "style": str, "exemplars": int, "class": str}


def read_edits(path: str) -> list[dict]:
    """One rule per line (JSON object); blank lines and # comments skipped. Errors name the
    line and the field."""
    p = Path(path)
    if not p.is_file():
        raise RewriteError(f"edit file '{path}' does not exist; write one JSON rule per line, "
                           'e.g. {"concept": "sea", "style": "snow", "exemplars": 3}')
    rules = []
    from dissect.runs.safe import read_bytes
    raw = read_bytes(p, None, limit=1 << 20, error=RewriteError, owner="--edits",
                     fix="write one JSON rule per line")
    try:
        text_all = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RewriteError(f"edit file '{path}' is not text (binary data); write one JSON rule "
                           'per line, e.g. {"concept": "sea", "style": "snow"}') from None
    for n, line in enumerate(text_all.splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path} line {n}"
        try:
            rule = json.loads(text)
        except json.JSONDecodeError as e:
            raise RewriteError(f"{where}: not a JSON object ({e.msg}); write e.g. "
                               '{"concept": "sea", "style": "snow"}') from None
        if not isinstance(rule, dict):
            raise RewriteError(f"{where}: a rule is a JSON object, not {type(rule).__name__}")
        for key in ("concept", "style"):
            if key not in rule:
                raise RewriteError(f"{where}: field '{key}' is missing")
        unknown = [k for k in rule if k not in FIELDS]
        if unknown:
            raise RewriteError(f"{where}: unknown field '{unknown[0]}' (fields: "
                               f"{', '.join(FIELDS)})")
        for key, kind in FIELDS.items():
            if key in rule and (not isinstance(rule[key], kind) or isinstance(rule[key], bool)):
                raise RewriteError(f"{where}: field '{key}' must be a {kind.__name__}, "
                                   f"not {rule[key]!r}")
        if rule["concept"] not in OBJECTS:
            raise RewriteError(f"{where}: field 'concept': unknown concept '{rule['concept']}' "
                               f"(choose from {', '.join(OBJECTS)})")
        if rule["style"] not in STYLES:
            raise RewriteError(f"{where}: field 'style': unknown style '{rule['style']}' "
                               f"(choose from {', '.join(STYLES)})")
        if "class" in rule and rule["class"] not in SCENE_NAMES + ["any"]:
            raise RewriteError(f"{where}: field 'class': unknown class '{rule['class']}' "
                               f"(choose from {', '.join(SCENE_NAMES)}, or any)")
        if not 1 <= rule.get("exemplars", 3) <= 10_000:
            raise RewriteError(f"{where}: field 'exemplars' must be between 1 and 10,000")
        rules.append(rule)
    if not rules:
        raise RewriteError(f"edit file '{path}' holds no rule")
    return rules


def ranked_update(W: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                  C: torch.Tensor, rank: int = 1) -> torch.Tensor:
    """ΔW = Λ Dᵀ with one direction per rule (its ROME direction D_j ∝ C⁻¹k*_j, the top
    whitened direction of its keys) and Λ the joint least-squares fit of every rule's values:
    rank ≤ `rank` × the number of rules, and any key with Dᵀk = 0 is left unchanged."""
    D = torch.cat([rank_one_update(W, k, v, C, rank=rank).directions
                   for k, v in zip(keys, values)], 1).double()
    K, V = torch.cat(keys, 1).double().cpu(), torch.cat(values, 1).double().cpu()
    R = V - W.double().cpu() @ K
    P = D.T @ K
    return (R @ P.T @ torch.linalg.pinv(P @ P.T) @ D.T).float()


def _apply(lm, layers, data, moments, lam, lam_scale=1.0, method="memit", rank=1):
    """A deep copy of lm with the rules in `data` spread over `layers` (method "memit": λC +
    KKᵀ; "ranked": one ROME direction per rule, fitted jointly, at the first layer only)."""
    out = copy.deepcopy(lm)
    for i, layer in enumerate(layers if method == "memit" else layers[:1]):
        target = edit_target(out.model, layer)
        K, V = [], []
        for ex, style in data:
            k, v = keys_values(out, target, ex.styled[style], ex.clean, ex.masks)
            K.append(k)
            V.append(v)
        W = target.flat_weight().float()
        if method == "ranked":
            apply_delta(target, ranked_update(W, K, V, moments[layer], rank))
            continue
        K, V = torch.cat(K, 1), torch.cat(V, 1)
        R = ((V - W @ K) / (len(layers) - i)).cpu()
        lam_i = lam_scale * float(K.shape[1]) if lam is None else lam
        apply_delta(target, memit_update(W, K, R, moments[layer], lam_i))
    return out


def memit(cfg, rules: list[dict], layers: list[str], lam: float | None = None,
          progress: Callable[[str], None] | None = None, lm=None, lam_scale: float = 1.0,
          method: str = "memit", rank: int = 1) -> dict:
    """Write `rules` over `layers`; λ = `lam`, or `lam_scale` × the number of keys.
    method "ranked": `rank` ROME directions per rule at layers[0] (see ranked_update)."""
    if method not in ("memit", "ranked"):
        raise RewriteError(f"unknown method '{method}': memit or ranked")
    if method == "ranked":
        layers = layers[:1]
    from dissect.editing.rule import cached_moment, load
    lm = lm or load(cfg)
    for layer in layers:
        edit_target(lm.model, layer)
    moments = {}
    for layer in layers:
        mom, _ = cached_moment(lm, edit_target(lm.model, layer), cfg.probe_seed,
                               cfg.probe_images, progress=progress)
        moments[layer] = mom.matrix()
    data, held = [], []
    for r in rules:
        ex = exemplars(r["concept"], r["style"], int(r.get("exemplars", cfg.exemplars)),
                       seed=cfg.seed, scene=r.get("class"))
        data.append((ex, r["style"]))
        h = heldout(r["concept"], [r["style"]], seed=cfg.heldout_seed, n=cfg.heldout)
        held.append((h, predict(lm, h.clean), predict(lm, h.styled[r["style"]])))
    x_clean, y_clean = clean_accuracy(lm, cfg.heldout_seed + 1, cfg.heldout)
    acc0 = float((predict(lm, x_clean) == y_clean).mean())
    curve, final = [], None
    for n in range(1, len(rules) + 1):
        if progress:
            progress(f"MEMIT: {n} rule(s) over {', '.join(layers)}")
        ed = _apply(lm, layers, data[:n], moments, lam, lam_scale, method, rank)
        per = []
        for r, (h, p_clean, p_before) in zip(rules, held):
            ok = p_clean == h.scenes
            p_after = predict(ed, h.styled[r["style"]])
            eb = int((p_before[ok] != h.scenes[ok]).sum())
            ea = int((p_after[ok] != h.scenes[ok]).sum())
            per.append({"rule": f"{r['concept']}:{r['style']}", "applied": rules.index(r) < n,
                        "n": int(ok.sum()), "acc_before": float((p_before[ok] == h.scenes[ok]).mean()),
                        "acc_after": float((p_after[ok] == h.scenes[ok]).mean()),
                        "corrected": corrected(eb, ea)})
        acc = float((predict(ed, x_clean) == y_clean).mean())
        applied = [p["corrected"] for p in per if p["applied"] and p["corrected"] == p["corrected"]]
        curve.append({"rules": n, "clean_acc": acc, "per_rule": per,
                      "corrected_mean": float(np.mean(applied)) if applied else float("nan")})
        final = ed
    return {"config": {**cfg.__dict__, "layers": layers, "lambda": lam,
                       "lambda_scale": lam_scale, "method": method, "rank": rank},
            "rule": "; ".join(f"{r['concept']} drawn as {r['style']} -> {r['concept']}" for r in rules),
            "rules": rules, "layer": ",".join(layers), "layers": layers,
            "rank": rank if method == "ranked" else None,
            "figures": {"clean_acc_before": acc0, "clean_acc_after": curve[-1]["clean_acc"]},
            "curve": curve, "model": final}


def memit_from_file(path: str, cfg, lam: float | None = None, progress=None,
                    method: str = "memit") -> dict:
    rules = read_edits(path)
    layers = [l.strip() for l in cfg.layer.split(",") if l.strip()]
    if method == "ranked" and cfg.rank < 1:
        raise RewriteError("--method ranked takes a fixed --rank (1, 2, ...), not auto")
    return memit(cfg, rules, layers, lam=lam, progress=progress, method=method,
                 rank=max(1, cfg.rank))


__all__ = ["read_edits", "memit", "memit_from_file", "ranked_update"]
