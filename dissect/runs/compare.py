"""Runs side by side: detectors per category, unique concepts, IoU distributions, label changes.

    items = [Item("r18", open_run("runs/r18"), "layer4"), Item("r18-rand", open_run(...), "layer4")]
    per_category(items)        # run, layer, category, interpretable[, significant]
    overview(items)            # one row per item: units, interpretable, unique concepts, ...
    label_changes(a, b)        # unit by unit, for two items of the same model and layer

The NetDissect comparisons (across layers, networks, trained against random, checkpoints) are
all made of these tables. Everything reads run folders only (dissect.runs.folder); the studio's
Compare page draws them, and they export as CSV.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dissect.runs.folder import Run


@dataclass
class Item:
    """One layer of one run, as compared: `name` is the run folder's name."""
    name: str
    run: Run
    layer: str

    @property
    def key(self) -> str:
        return f"{self.name}:{self.layer}"

    @property
    def threshold(self) -> float:
        return float(self.run.config.get("iou_threshold") or 0.04)

    def units(self) -> pd.DataFrame:
        """units.csv with `interpretable` (IoU ≥ the run's threshold) and `significant` when
        the run measured it (a run dissected with --null)."""
        df = self.run.units(self.layer).copy()
        df["label"] = df["label"].fillna("").astype(str)
        df["category"] = df["category"].fillna("none").astype(str)
        df["interpretable"] = df["iou"].fillna(0) >= self.threshold
        if "significant" in df.columns:
            df["significant"] = df["significant"].fillna(False).astype(bool) & df["interpretable"]
        return df


def parse_selection(text: str) -> list[tuple[str, str]]:
    """'r18:layer4,rand:layer4' -> [("r18", "layer4"), ("rand", "layer4")] (URL form)."""
    out = []
    for part in (p.strip() for p in (text or "").split(",")):
        run, sep, layer = part.rpartition(":")
        if sep and run and layer:
            out.append((run, layer))
    return out


def format_selection(items: list[Item]) -> str:
    return ",".join(i.key for i in items)


def per_category(items: list[Item]) -> pd.DataFrame:
    """Interpretable (and, where measured, significant) units per category of every item."""
    rows = []
    for it in items:
        df = it.units()
        cats = sorted(set(df["category"]) - {"none"})
        has_sig = "significant" in df.columns
        for cat in cats:
            sub = df[df["category"] == cat]
            rows.append({"run": it.name, "layer": it.layer, "item": it.key, "category": cat,
                         "interpretable": int(sub["interpretable"].sum()),
                         "significant": int(sub["significant"].sum()) if has_sig else None})
    return pd.DataFrame(rows, columns=["run", "layer", "item", "category", "interpretable",
                                       "significant"])


def overview(items: list[Item]) -> pd.DataFrame:
    """One row per item: model, weights, units, interpretable, unique concepts, median IoU."""
    rows = []
    for it in items:
        df = it.units()
        interp = df[df["interpretable"]]
        cfg = it.run.config
        rows.append({
            "run": it.name, "layer": it.layer, "item": it.key, "model": cfg.get("model", "?"),
            "weights": str(cfg.get("weights", "?")), "units": len(df),
            "interpretable": len(interp),
            "significant": int(df["significant"].sum()) if "significant" in df.columns else None,
            "unique_concepts": int(interp["label"].nunique()),
            "median_iou": float(df["iou"].median()) if len(df) else float("nan"),
            "threshold": it.threshold,
        })
    return pd.DataFrame(rows)


def iou_values(items: list[Item]) -> pd.DataFrame:
    """Long table (item, unit, iou, category) for overlaid distributions."""
    return pd.concat([it.units()[["unit", "iou", "category"]].assign(item=it.key)
                      for it in items], ignore_index=True) if items else \
        pd.DataFrame(columns=["unit", "iou", "category", "item"])


def comparable(a: Item, b: Item) -> bool:
    """Same model architecture, same layer, same number of units: unit i means the same slot."""
    return (a.run.config.get("model") == b.run.config.get("model") and a.layer == b.layer
            and len(a.run.units(a.layer)) == len(b.run.units(b.layer)))


def label_changes(a: Item, b: Item) -> pd.DataFrame:
    """Unit by unit: label and IoU in a and in b, and whether the interpretable label changed.

    ValueError when the two are not the same model and layer (see `comparable`)."""
    if not comparable(a, b):
        raise ValueError(f"{a.key} and {b.key} are not the same model and layer: a unit-by-unit "
                         "table needs checkpoints of one architecture")
    ua, ub = a.units(), b.units()
    out = pd.DataFrame({
        "unit": ua["unit"].astype(int),
        "label_a": ua["label"].where(ua["interpretable"], ""), "iou_a": ua["iou"],
        "label_b": ub["label"].where(ub["interpretable"], "").to_numpy(),
        "iou_b": ub["iou"].to_numpy(),
    })
    out["change"] = [
        "same" if la == lb else "gained" if not la else "lost" if not lb else "relabelled"
        for la, lb in zip(out["label_a"], out["label_b"])]
    return out
