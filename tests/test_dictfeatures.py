"""Dictionary features (dissect.features, `python -m dissect features`): known answers.

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
from dissect.features import Basis, features_layer, match_cosines
from dissect.features.layer import dissect_basis
from dissect.probes.registry import open_run_probe
from dissect.runs.folder import open_run

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
    probe = copy.copy(open_run_probe(run))
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
    layer = dest / "layers" / "conv1"
    np.save(layer / "acts.npy", acts.astype(np.float16))
    c = acts.shape[1]                   # dissect the planted channels as conv1's units: the
    ident = dissect_basis(dest, "conv1", Basis("pca", torch.eye(c), torch.zeros(c)),
                          f"conv1@pca{c}")        # identity basis, through the same engine
    for f in ident.iterdir():
        if f.name not in ("acts.npy", "basis.json", "basis.safetensors"):
            f.replace(layer / f.name)
    shutil.rmtree(ident)
    info = json.loads((dest / "run.json").read_text())
    del info["features"]
    info["counts"]["units"] = {"conv1": c}
    (dest / "run.json").write_text(json.dumps(info))
    return dest


def labels_at(run: Path, layer: str, cut: float = 0.1) -> set[str]:
    df = open_run(run).units(layer)
    return set(df.loc[df["iou_heldout"].astype(float) >= cut, "label"].astype(str))


MIXED = ["red", "orange", "green", "blue", "purple", "white"]


@pytest.fixture(scope="module")
def mixed(host, masks, tmp_path_factory):
    """(run, mixing matrix, features_layer output): a planted mixed layer and its NMF layer."""
    c = len(MIXED)
    rng = np.random.default_rng(0)
    M = np.zeros((c, c))
    for i in range(c):                      # each concept on half the channels
        M[i, rng.choice(c, c // 2, replace=False)] = rng.uniform(0.5, 1.5, c // 2)
    S = np.stack([masks[n] for n in MIXED], 1)                          # [N, c, g, g]
    acts = np.einsum("nchw,cd->ndhw", S, M) + 0.01 * rng.random((N_IMAGES, c, GRID, GRID))
    run = plant(host, tmp_path_factory.mktemp("mixed") / "runs" / "mixed", acts)
    out = features_layer(run, "conv1", "nmf", k=c, progress=False)
    return run, M, out


def test_mixed_basis_nmf_recovers_mixing_and_labels(mixed):
    run, M, out = mixed
    c = len(MIXED)
    dec = Basis.load(out["path"]).decoder.numpy()
    cos = match_cosines(M, dec)
    assert (cos >= 0.85).sum() >= c - 1, cos
    found = labels_at(run, out["layer"]) & set(MIXED)
    assert len(found) >= c - 1, found
    unit_found = labels_at(run, "conv1") & set(MIXED)
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
    assert len(labels_at(run, "conv1") & set(names)) < len(found)
    info = json.loads((Path(out["path"]) / "basis.json").read_text())
    assert info["r2"] > 0.9 and info["l0"] <= 2 and {"dead", "stability"} <= set(info)


def test_feature_layer_reads_like_a_layer_of_units(mixed, tmp_path):
    run, _M, out = mixed
    r = open_run(run)
    name = out["layer"]
    assert r.layers.index(name) == r.layers.index("conv1") + 1
    assert r.info["features"][name]["basis_of"] == "conv1"
    units = r.units(name)
    assert len(units) == 6 and {"iou_heldout", "threshold", "interpretable"} <= set(units)
    assert r.iou(name).shape == (6, len(r.concepts))
    top = r.topk(name)
    assert top["maps"].shape[:2] == (6, r.config["topk"]) and top["maps"].shape[2:] == (GRID, GRID)
    assert r.imgmax(name).shape == (N_IMAGES, 6)
    assert r.acts(name).shape == (N_IMAGES, 6, GRID, GRID)
    assert not (run / ".staging").exists()
    for fmt in ("netdissect", "json", "csv"):
        assert main(["export", str(run), "--format", fmt, "--layer", name,
                     "--out", str(tmp_path / f"x.{fmt}")]) == 0
    assert main(["explain", str(run), "--layer", name, "--length", "2", "--quiet"]) == 0


def test_null_gives_trust_columns(mixed):
    run, _M, _out = mixed
    out = features_layer(run, "conv1", "pca", k=4, null=3, progress=False, keep_acts=False)
    units = open_run(run).units(out["layer"])
    assert {"p_value", "q_value", "significant", "iou_lo", "iou_hi"} <= set(units)


def test_pages_show_feature_layers(mixed, monkeypatch):
    from streamlit.testing.v1 import AppTest
    run, _M, out = mixed
    monkeypatch.setenv("DISSECT_RUNS", str(run.parent))
    repo = Path(__file__).resolve().parent.parent
    for page in ("pages/overview.py", "pages/unit_browser.py", "pages/unit_detail.py"):
        at = AppTest.from_file(str(repo / "app.py"), default_timeout=90)
        at.query_params.update({"run": run.name, "layer": out["layer"], "unit": "0"})
        at.run()
        at.switch_page(page)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        radio = at.sidebar.radio(key="_pick_layer")
        assert radio.value == out["layer"]
        assert "features of conv1 (NMF, 6)" in [radio.format_func(o) for o in radio.options]
        if page.endswith("unit_detail.py"):
            heads = [h.value for h in at.subheader]
            assert "Units that build this feature" in heads, heads
            links = [pl.proto.label for pl in at.get("page_link")]
            assert any(l.startswith("unit ") for l in links), links
    at = AppTest.from_file(str(repo / "app.py"), default_timeout=90)
    at.query_params.update({"run": run.name, "layer": "conv1", "unit": "0"})
    at.run()
    at.switch_page("pages/unit_detail.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Features that use this unit" in [h.value for h in at.subheader]
    at.switch_page("pages/compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Units vs dictionary features" in h.value for h in at.subheader)


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_input_one_line_nothing_half_written(mixed, host, tmp_path, capsys, monkeypatch):
    run, _M, out = mixed
    base = ["features", str(run), "--layer", "conv1", "--quiet"]
    assert "at least 1 feature" in _error(capsys, base + ["--k", "0"])
    assert "--topk 5 is larger than --k 4" in _error(capsys, base + ["--k", "4", "--topk", "5"])
    assert "no layer 'nope'" in _error(capsys, ["features", str(run), "--layer", "nope"])
    assert "--overwrite" in _error(capsys, base + ["--method", "nmf", "--k", "6"])
    assert "unknown --method" in _error(capsys, base + ["--method", "ica"])
    nocache = tmp_path / "nocache"
    shutil.copytree(host, nocache)
    (nocache / "layers" / "conv1" / "acts.npy").unlink()
    assert "without --no-acts" in _error(capsys, ["features", str(nocache), "--layer", "conv1"])
    signed = plant(host, tmp_path / "signed",
                   np.random.default_rng(0).normal(size=(N_IMAGES, 4, GRID, GRID)))
    assert "post-ReLU" in _error(capsys, ["features", str(signed), "--layer", "conv1",
                                          "--method", "nmf", "--k", "3"])
    assert sorted(p.name for p in (signed / "layers").iterdir()) == ["conv1"]
    # killed while writing: no layer folder, run.json untouched; the same command then works
    import dissect.engine.results
    before = (signed / "run.json").read_text()

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(dissect.engine.results, "write_results", killed)
    assert main(["features", str(signed), "--layer", "conv1", "--method", "pca", "--k", "2",
                 "--quiet"]) == 130
    assert sorted(p.name for p in (signed / "layers").iterdir()) == ["conv1"]
    assert (signed / "run.json").read_text() == before
    monkeypatch.undo()
    assert main(["features", str(signed), "--layer", "conv1", "--method", "pca", "--k", "2",
                 "--quiet"]) == 0
    assert (signed / "layers" / "conv1@pca2" / "units.csv").exists()
    assert not (signed / ".staging").exists()


def test_ablate_command_edits_features(mixed, capsys):
    run, _M, out = mixed
    from dissect.features.ablate import feature_intervention
    iv = feature_intervention(open_run(run), out["layer"], [1])
    a = torch.rand(2, 6, 4, 4) + 0.5
    z = iv.basis.encode_maps(a)
    edited = iv.apply(a)
    expect = a - z[:, 1:2] * iv.basis.decoder[1].view(1, -1, 1, 1)
    assert torch.allclose(edited, expect, atol=1e-5)
    assert torch.equal(feature_intervention(open_run(run), out["layer"], []).apply(a), a)
    assert "out of range" in _error(capsys, ["ablate", "--run", str(run), "--layer", out["layer"],
                                             "--units", "6", "--set", "toyworld:4"])


def test_direction_from_a_feature(mixed, tmp_path, capsys):
    from dissect.directions.concept import load_direction
    run, _M, out = mixed
    dest = tmp_path / "dir"
    assert main(["direction", "--feature", str(run), out["layer"], "2", "--out", str(dest),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    d = load_direction(dest)
    row = Basis.load(out["path"]).decoder[2]
    assert torch.allclose(d.vector, row / row.norm()) and d.layer == "conv1"
    assert doc["feature_layer"] == out["layer"] and doc["feature"] == 2 and d.sigma > 0
    assert "out of range" in _error(capsys, ["direction", "--feature", str(run), out["layer"],
                                             "9", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
