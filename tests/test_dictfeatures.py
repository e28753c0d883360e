"""Dictionary features (dissect.dictfeatures, `python -m dissect features`): known answers.

- mixed basis: planted channels = a sparse non-negative mixture of C concept masks; NMF (K=C)
  recovers the mixing directions and labels the concepts the units blur;
- superposition: 14 concepts in 8 channels; a TopK SAE (K=32, topk 2) recovers the directions;
- exact plumbing: PCA at K=C, ablating nothing = the model's logits, one feature = by hand;
- the layer folder is read by open_run, export and the trust columns like a layer of units.

Planted layers replace the kept activations (acts.npy) of a real engine run on the ToyWorld
probe with activations built from the probe's own concept masks, so the truth is exact.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dissect.__main__ import main
from dissect.dictfeatures import Basis, features_layer, match_cosines
from dissect.dictfeatures.layer import dissect_basis
from dissect.runs import open_run

N_IMAGES = 120
GRID = 28          # planted maps: 28x28 (the probe's 112 px masks, 4x4 averaged)


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Path:
    """A complete ToyWorld run (conv1 kept, --quantile 0.05) whose acts the tests replace."""
    out = tmp_path_factory.mktemp("feat") / "host"
    assert main(["run", "--model", "toyworld", "--layer", "conv1", "--probe",
                 f"toyworld:{N_IMAGES}", "--quantile", "0.05", "--batch-size", "40",
                 "--workers", "0", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def masks(host) -> dict[str, np.ndarray]:
    """{concept name: float32 [N, GRID, GRID] share of each cell carrying it} (color, object)."""
    run = open_run(host)
    probe = copy.copy(run.probe())
    probe.decode_images = False
    names = dict(zip(run.concepts["concept"].astype(int), run.concepts["name"]))
    out: dict[str, np.ndarray] = {}
    for i in range(len(probe)):
        item = probe[i]
        for cat in ("color", "object"):
            plane = item.pixel[cat][0]
            for c in np.unique(plane):
                if c == 0:
                    continue
                m = (plane == c).astype(np.float32)
                s = plane.shape[0] // GRID
                cell = m.reshape(GRID, s, GRID, s).mean((1, 3))
                out.setdefault(names[int(c)], np.zeros((len(probe), GRID, GRID), np.float32))[i] = cell
    return out


def plant(host: Path, dest: Path, acts: np.ndarray) -> Path:
    """A copy of `host` whose conv1 acts are `acts` [N, C, GRID, GRID]."""
    shutil.copytree(host, dest)
    np.save(dest / "layers" / "conv1" / "acts.npy", acts.astype(np.float16))
    return dest


def labels_at(run: Path, layer: str, cut: float = 0.1) -> set[str]:
    df = open_run(run).units(layer)
    return set(df.loc[df["iou_heldout"].astype(float) >= cut, "label"].astype(str))


def test_mixed_basis_nmf_recovers_mixing_and_labels(host, masks, tmp_path):
    concepts = ["red", "orange", "green", "blue", "purple", "white"]
    c = len(concepts)
    rng = np.random.default_rng(0)
    M = np.zeros((c, c))
    for i in range(c):                      # each concept on half the channels
        M[i, rng.choice(c, c // 2, replace=False)] = rng.uniform(0.5, 1.5, c // 2)
    S = np.stack([masks[n] for n in concepts], 1)                       # [N, c, g, g]
    acts = np.einsum("nchw,cd->ndhw", S, M) + 0.01 * rng.random((N_IMAGES, c, GRID, GRID))
    run = plant(host, tmp_path / "mixed", acts)
    out = features_layer(run, "conv1", "nmf", k=c, progress=False)
    dec = Basis.load(out["path"]).decoder.numpy()
    cos = match_cosines(M, dec)
    assert (cos >= 0.85).sum() >= c - 1, cos
    found = labels_at(run, out["layer"]) & set(concepts)
    assert len(found) >= c - 1, found
    units = dissect_basis(run, "conv1", Basis("pca", torch.eye(c), torch.zeros(c)), "conv1@pca6")
    unit_found = labels_at(run, units.name) & set(concepts)
    assert len(unit_found) < len(found), (unit_found, found)


def test_superposition_sae_recovers_directions(host, masks, tmp_path):
    colours = ["red", "orange", "yellow", "green", "blue", "white", "brown"]
    objects = ["sea", "mountain", "house", "car", "kite", "boat", "fish"]   # in many colours
    names = colours + objects
    rng = np.random.default_rng(1)
    d = rng.normal(size=(len(names), 8))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    S = np.stack([masks[n] for n in names], 1)
    acts = np.einsum("nchw,cd->ndhw", S, d) + 0.01 * rng.normal(size=(N_IMAGES, 8, GRID, GRID))
    run = plant(host, tmp_path / "super", acts)
    out = features_layer(run, "conv1", "sae", k=32, topk=2, progress=False)
    dec = Basis.load(out["path"]).decoder.numpy()
    best = (d @ (dec / np.linalg.norm(dec, axis=1, keepdims=True)).T).max(1)
    assert (best >= 0.9).sum() >= 12, np.round(best, 2)
    found = labels_at(run, out["layer"]) & set(names)
    assert len(found) >= 11, found
    units = dissect_basis(run, "conv1", Basis("pca", torch.eye(8), torch.zeros(8)), "conv1@pca8")
    assert len(labels_at(run, units.name) & set(names)) < len(found)
    info = json.loads((Path(out["path"]) / "basis.json").read_text())
    assert info["r2"] > 0.9 and info["l0"] <= 2 and {"dead", "stability"} <= set(info)
