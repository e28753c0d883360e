"""An independent brute-force Network Dissection, checked against `python -m dissect run`.

    pytest -q tests/test_reference_semantics.py

The reference below never imports the engine: it reads a hand-made Broden folder itself,
runs the model itself, takes `numpy.quantile` of all raw activations, upsamples every map with
`F.interpolate(bilinear, align_corners=False)`, and counts I, G and the three union
denominators pixel by pixel (DESIGN.md, "Semantics"). The folder holds the awkward cases:
several mask planes per category cell, a label in two categories (coverage decides its primary
category, ties to the later one), `;`-separated image-level labels, images missing
categories (one has an image-level label only), an image with no data at all (dropped, as
NetDissect does), a non-square 48×64 image with 24×32 masks, and label numbers ≥ 256.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dissect.__main__ import main

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CATS = ["color", "object", "part", "scene", "texture"]
NAMES = {1: "red", 2: "green", 3: "blue", 4: "gray", 20: "beach", 21: "forest", 22: "sky",
         40: "striped", 41: "dotted", 260: "door", 300: "car", 301: "house", 303: "window",
         512: "wheel"}
# label -> {category: coverage}: door is an object, window a part, wheel ties (-> part)
COVER = {260: {"object": 0.5, "part": 0.2}, 303: {"object": 0.1, "part": 0.4},
         512: {"object": 0.3, "part": 0.3}}

MODEL_PY = '''
import torch, torch.nn as nn
def build():
    torch.manual_seed(123)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.Tanh(),
                        nn.Conv2d(12, 10, 3, stride=2, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 4))
    with torch.no_grad():
        for i, m in enumerate(net):
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1 + i); m.bias.add_(0.3 * i)
    return net.eval()
'''


def _mask(path: Path, lab: np.ndarray) -> None:
    rgb = np.zeros(lab.shape + (3,), np.uint8)
    rgb[..., 0], rgb[..., 1] = lab % 256, lab // 256
    Image.fromarray(rgb).save(path)


def make_tricky_broden(out: Path, n: int = 18, seed: int = 0) -> None:
    """Write the tricky Broden folder described in the module docstring."""
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ih, iw, sh, sw = 48, 64, 24, 32
    rows = []
    for i in range(n):
        img = rng.normal(120, 30, (ih, iw, 3))
        colour = np.zeros((sh, sw), np.int64)
        objs: list[np.ndarray] = []
        part = np.zeros((sh, sw), np.int64)
        for _ in range(int(rng.integers(1, 4)) if i % 5 else 0):
            lab = int(rng.choice([300, 301, 260, 303, 512]))
            h, w = int(rng.integers(4, 14)), int(rng.integers(4, 18))
            y, x = int(rng.integers(0, sh - h)), int(rng.integers(0, sw - w))
            free = [p for p in objs if not p[y:y + h, x:x + w].any()]
            if not free:
                objs.append(np.zeros((sh, sw), np.int64))
                free = objs[-1:]
            free[0][y:y + h, x:x + w] = lab         # overlaps go to another plane
            c = int(rng.integers(1, 5))
            colour[y:y + h, x:x + w] = c
            img[2 * y:2 * (y + h), 2 * x:2 * (x + w)] = 60 * c + 5 * (lab % 7)
            if lab == 300:                            # car: window on top, door bottom-left
                part[y:y + h // 2, x:x + w] = 303
                part[y + h // 2:y + h, x:x + w // 2] = 260
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / "images" / f"im{i}.png")
        row = {"image": f"im{i}.png", "split": "train", "ih": ih, "iw": iw, "sh": sh, "sw": sw}
        row["color"] = ""
        if i % 2 == 0 and colour.any():
            _mask(out / "images" / f"im{i}_c.png", colour)
            row["color"] = f"im{i}_c.png"
        names = []
        for j, p in enumerate(objs):
            _mask(out / "images" / f"im{i}_o{j}.png", p)
            names.append(f"im{i}_o{j}.png")
        row["object"] = ";".join(names)
        row["part"] = ""
        if part.any():
            _mask(out / "images" / f"im{i}_p.png", part)
            row["part"] = f"im{i}_p.png"
        scenes = [] if i % 3 == 1 else [20 + i % 3] + ([20 + (i + 1) % 3] if i % 4 == 0 else [])
        row["scene"] = ";".join(map(str, scenes))
        row["texture"] = "" if i % 3 == 0 else ("40" if i % 2 else "40;41")
        if i == 7:                                     # image-level labels only
            row.update(color="", object="", part="")
        if i == 11:                                    # no data at all: dropped
            row.update(color="", object="", part="", scene="", texture="")
        rows.append(row)
    with open(out / "index.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    members = {"color": [1, 2, 3, 4], "object": [260, 300, 301, 303, 512], "part": [260, 303, 512],
               "scene": [20, 21, 22], "texture": [40, 41]}
    with open(out / "category.csv", "w") as f:
        f.write("name,first,last,count,frequency\n")
        for c in CATS:
            f.write(f"{c},{min(members[c])},{max(members[c])},{len(members[c])},10\n")
    with open(out / "label.csv", "w") as f:
        f.write("number,name,category,frequency,coverage,syns\n")
        for num in sorted(NAMES):
            cs = ";".join(f"{c}(5)" for c in CATS if num in members[c])
            f.write(f"{num},{NAMES[num]},{cs},5,1.0,{NAMES[num]}\n")
    for c in CATS:
        with open(out / f"c_{c}.csv", "w") as f:
            f.write("code,number,name,frequency,coverage\n")
            for code, num in enumerate(members[c], 1):
                f.write(f"{code},{num},{NAMES[num]},5,{COVER.get(num, {}).get(c, 1.0)}\n")


# ------------------------------------------------------------------------------ reference
def reference(d: Path, model: torch.nn.Module, layer: str, denominator: str, q: float = 0.005):
    """Brute force: thresholds, IoU [K, labels] and (category, label) per unit."""
    rows = list(csv.DictReader(open(d / "index.csv")))
    rows = [r for r in rows if any(r[c] for c in CATS)]
    cov: dict[int, dict[str, float]] = {}
    for c in CATS:
        for r in csv.DictReader(open(d / f"c_{c}.csv")):
            cov.setdefault(int(r["number"]), {})[c] = float(r["coverage"])
    primary = {n: CATS[max((cov[n].get(c, 0.0), i) for i, c in enumerate(CATS))[1]]
               for n in NAMES}
    nums = sorted(NAMES)
    col = {n: i for i, n in enumerate(nums)}
    out: list[torch.Tensor] = []
    hook = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: out.append(o.detach().clone()))
    with torch.no_grad():
        for r in rows:
            x = torch.from_numpy(np.asarray(Image.open(d / "images" / r["image"]).convert("RGB"),
                                            np.float32) / 255).permute(2, 0, 1)
            x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
            model(x[None])
    hook.remove()
    acts = torch.cat(out).numpy()
    n_img, k = acts.shape[:2]
    thr = np.array([np.quantile(acts[:, u].ravel(), 1 - q) for u in range(k)], np.float32)
    inter, truth = np.zeros((k, len(nums))), np.zeros(len(nums))
    a = {c: np.zeros(k) for c in CATS}
    for i, r in enumerate(rows):
        sh, sw = int(r["sh"]), int(r["sw"])
        up = F.interpolate(torch.from_numpy(acts[i:i + 1]), size=(sh, sw), mode="bilinear",
                           align_corners=False)[0].numpy()
        act = up > thr[:, None, None]
        n_act = act.reshape(k, -1).sum(1)
        planes, scalars = [], []
        for c in CATS:
            for t in filter(None, r[c].split(";")):
                if re.fullmatch(r"\d+", t):
                    scalars.append(int(t))
                else:
                    p = np.asarray(Image.open(d / "images" / t).convert("RGB")).astype(np.int64)
                    planes.append(p[..., 0] + 256 * p[..., 1])
        present = {primary[s] for s in scalars}
        touched = [set(present) for _ in range(k)]
        for p in planes:
            for lab in np.unique(p[p > 0]):
                m = p == lab
                truth[col[lab]] += m.sum()
                inter[:, col[lab]] += act[:, m].sum(1)
                present.add(primary[lab])
                for u in np.flatnonzero(act[:, m].any(1)):
                    touched[u].add(primary[lab])
        for s in scalars:
            truth[col[s]] += sh * sw
            inter[:, col[s]] += n_act
        for c in CATS:
            if denominator == "global" or (denominator == "nd" and c in present):
                a[c] += n_act
            elif denominator == "netdissect-lite":
                a[c] += n_act * np.array([c in t for t in touched])
    union = np.stack([a[primary[n]] for n in nums], 1) + truth[None] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    best = []
    for u in range(k):
        cands = []
        for c in CATS:
            idx = [col[n] for n in nums if primary[n] == c]
            if idx:
                j = idx[int(np.argmax(iou[u, idx]))]
                cands.append((iou[u, j], c, NAMES[nums[j]]))
        best.append(max(cands, key=lambda t: t[0]))  # first max
    return thr, iou, nums, best, primary, [r["image"] for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("refsem")
    make_tricky_broden(root / "broden")
    (root / "net.py").write_text(MODEL_PY)
    return root


@pytest.mark.parametrize("denominator", ["nd", "netdissect-lite", "global"])
def test_run_folder_matches_brute_force_reference(setup, denominator):
    root = setup
    out = root / f"run_{denominator}"
    rc = main(["run", "--model", f"{root / 'net.py'}:build", "--weights", "none",
               "--layer", "1,2,4", "--probe", f"broden:{root / 'broden'}", "--out", str(out),
               "--denominator", denominator, "--quiet", "--threads", "1", "--no-acts"])
    assert rc in (0, None)
    ns: dict = {}
    exec(MODEL_PY, ns)
    model = ns["build"]()
    images = pd.read_csv(out / "images.csv")
    concepts = pd.read_csv(out / "concepts.csv")
    for layer in ("1", "2", "4"):
        thr, iou, nums, best, primary, names = reference(root / "broden", model, layer, denominator)
        assert [os.path.basename(p) for p in images.path] == names   # empty image dropped
        units = pd.read_csv(out / "layers" / layer / "units.csv")
        ours = np.load(out / "layers" / layer / "iou.npy")
        cols = [nums.index(int(c)) for c in concepts.concept]
        assert sorted(int(c) for c in concepts.concept) == nums
        assert {int(c): cat for c, cat in zip(concepts.concept, concepts.category)} == primary
        np.testing.assert_allclose(units.threshold.to_numpy(), thr, rtol=1e-5, atol=1e-6)
        assert np.abs(ours - iou[:, cols]).max() < 1e-6, layer
        assert list(units.label) == [b[2] for b in best], layer
        assert list(units.category) == [b[1] for b in best], layer
        np.testing.assert_allclose(units.iou.to_numpy(), [b[0] for b in best], atol=1e-6)


def test_reference_denominators_differ(setup):
    """The fixture is discriminating: the three unions give different IoUs here."""
    ns: dict = {}
    exec(MODEL_PY, ns)
    model = ns["build"]()
    ious = [reference(setup / "broden", model, "2", d)[1] for d in ("nd", "netdissect-lite",
                                                                     "global")]
    assert np.abs(ious[0] - ious[1]).max() > 1e-3
    assert np.abs(ious[0] - ious[2]).max() > 1e-3
