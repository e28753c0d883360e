"""Compositional formulas: known answers on generated Broden data, the pruned beam against the
naive one, the exhaustive search against brute force, the CLI and its bad input."""
from __future__ import annotations

import itertools
import shutil

import numpy as np
import pandas as pd
import pytest

from dissect.probes.broden import BrodenProbe
from dissect.formulas.explain import explain_units
from dissect.formulas.grammar import (AND, AND_NOT, OR, FormulaError, canonical, mentions,
                                      parse, to_text)
from dissect.formulas.labels import LabelIndex, unpack
from dissect.formulas.search import Problem, beam_search, exhaustive
from dissect.formulas.unitmask import active_pixels
from dissect.probes.splits import heldout_halves
from dissect.probes.synthetic_broden import make_synthetic_broden

S = 32    # mask (and activation) size


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """(probe, index, names, full masks by name) on 160 generated images with circles/squares."""
    d = tmp_path_factory.mktemp("shapes") / "sb"
    make_synthetic_broden(d, n=160, image_size=S, mask_size=S, seed=3, shapes=True)
    probe = BrodenProbe(d)
    index = LabelIndex.from_probe(probe, probe.concepts["concept"].to_numpy())
    names = probe.concepts["name"].tolist()
    masks = {n: unpack(index.leaf(j), index.n_pixels) for j, n in enumerate(names)}
    return probe, index, names, masks


def _units(index, *maps):
    acts = np.stack([m.reshape(index.n_images, S, S).astype(np.float32) for m in maps], 1)
    return acts


def test_planted_formula_comes_back(shapes):
    probe, index, names, mk = shapes
    target = (mk["circle"] | mk["square"]) & ~mk["red"]
    assert target.any() and (mk["circle"] & mk["red"]).any()    # the AND NOT matters
    acts = _units(index, target)
    choose, measure = heldout_halves(probe.images, 0)
    df, summary = explain_units(acts, np.array([0.5]), index, names, choose=choose,
                                measure=measure, length=3, beam=5, null=3)
    row = df.iloc[0]
    want = parse("((circle OR square) AND NOT red)", names)
    assert canonical(parse(row["formula"], names)) == canonical(want)
    assert row["formula_iou"] == 1.0 and row["formula_iou_heldout"] == 1.0
    assert row["formula_length"] == 3 and not row["formula_fallback"]
    assert row["formula_label_iou_heldout"] < 0.8
    assert row["formula_p_value"] == pytest.approx(1 / 4)     # beats every permutation
    assert summary["formula_ious_computed"] < summary["formula_ious_naive"]


def test_null_unit_falls_back_to_its_single_label(shapes):
    probe, index, names, mk = shapes
    rng = np.random.default_rng(5)
    noise = [rng.random((index.n_images, S, S)).reshape(index.n_images, -1) for _ in range(3)]
    acts = _units(index, *noise)
    th = np.array([np.quantile(n, 0.99) for n in noise], np.float32)
    choose, measure = heldout_halves(probe.images, 0)
    df, _ = explain_units(acts, th, index, names, choose=choose, measure=measure, exact=False)
    assert df["formula_fallback"].all()
    assert (df["formula_length"] == 1).all()
    # in-sample, the search still finds longer formulas with a higher IoU
    assert (df["formula_searched"].map(lambda f: len(parse(f, names))) > 1).all()
    assert (df["formula_searched_iou"] > df["formula_iou"]).all()


def _problem(index, unit_mask, subset=None):
    img, pix = np.nonzero(unit_mask.reshape(index.n_images, -1))
    return Problem.build(index, img, pix, subset, "t" if subset is not None else "all")


def test_pruned_beam_equals_naive_beam(shapes):
    _, index, names, mk = shapes
    rng = np.random.default_rng(0)
    units = [(mk["circle"] | mk["car"]) & ~mk["red"], mk["sky"] & (rng.random(mk["sky"].shape) < .3),
             rng.random(mk["red"].shape) < 0.02, mk["house"] | mk["window"]]
    subset = rng.random(index.n_images) < 0.5
    for u in units:
        for sub in (None, subset):
            prob = _problem(index, u, sub)
            for length, beam in ((3, 5), (4, 3), (2, 1)):
                fast, fi = beam_search(prob, length, beam)
                slow, si = beam_search(prob, length, beam, prune=False)
                assert [b.formula for b in fi["beam"]] == [b.formula for b in si["beam"]]
                assert fast.iou == slow.iou
                assert prob.score(fast.formula).iou == pytest.approx(fast.iou, abs=1e-12)
                assert fi["stats"].exact <= si["stats"].exact


def _brute(index, names, unit, concepts, length):
    """Every left-deep formula of ≤ length distinct concepts, on plain boolean masks."""
    full = {c: unpack(index.leaf(c), index.n_pixels).reshape(-1) for c in concepts}
    m = unit.reshape(-1)
    best = None
    for n in range(1, length + 1):
        for cs in itertools.permutations(concepts, n):
            for ops in itertools.product((OR, AND, AND_NOT), repeat=n - 1):
                v = full[cs[0]]
                for op, c in zip(ops, cs[1:]):
                    v = v | full[c] if op == OR else (v & full[c] if op == AND else v & ~full[c])
                inter = int((v & m).sum())
                iou = inter / (int(v.sum()) + int(m.sum()) - inter)
                f = (cs[0],) + tuple(zip(ops, cs[1:]))
                key = (-iou, n, f)
                if best is None or key < best[0]:
                    best = (key, f, iou)
    return best[1], best[2]


def test_exhaustive_and_wide_beam_match_brute_force_on_a_tiny_vocabulary(tmp_path):
    d = tmp_path / "tiny"
    make_synthetic_broden(d, n=40, image_size=16, mask_size=16, seed=1, shapes=True)
    probe = BrodenProbe(d, categories=["object"])
    index = LabelIndex.from_probe(probe, probe.concepts["concept"].to_numpy())
    names = probe.concepts["name"].tolist()
    C = len(names)
    assert 5 <= C <= 7
    rng = np.random.default_rng(2)
    mk = [unpack(index.leaf(c), index.n_pixels) for c in range(C)]

    def random_unit():
        """A random left-deep formula of 3 concepts, with 20% of it dropped and some noise."""
        a, b, c = rng.choice(C, 3, replace=False)
        p, q = rng.integers(0, 3, 2)
        comb = lambda op, x, y: x | y if op == OR else (x & y if op == AND else x & ~y)
        noise = rng.random(mk[0].shape)
        return (comb(q, comb(p, mk[a], mk[b]), mk[c]) & (noise < 0.8)) | (noise > 0.995)

    misses = 0
    for k in range(16):
        u = random_unit()
        prob = _problem(index, u)
        ex = exhaustive(prob, list(range(C)), 3)
        if k < 3:
            f, iou = _brute(index, names, u, list(range(C)), 3)
            assert ex.formula == f and ex.iou == pytest.approx(iou, abs=1e-12)
            wide, _ = beam_search(prob, 3, beam=1000)      # keeps every formula: exhaustive
            assert wide.formula == f
        narrow, _ = beam_search(prob, 3, beam=1)
        assert narrow.iou <= ex.iou + 1e-12
        misses += ex.iou > narrow.iou + 1e-12
    assert misses >= 1     # a width-1 beam misses the best formula on some units


def test_active_pixels_follow_the_bilinear_upsample():
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(0)
    a = rng.random((6, 7, 7)).astype(np.float16)
    img, pix = active_pixels(a, 0.8, (28, 28))
    up = F.interpolate(torch.from_numpy(a.astype(np.float32))[:, None], size=(28, 28),
                       mode="bilinear", align_corners=False)[:, 0].reshape(6, -1).numpy()
    want = np.nonzero(up > np.float32(0.8))
    assert np.array_equal(img, want[0]) and np.array_equal(pix, want[1])


def test_grammar_round_trip_and_commutativity():
    names = ["circle", "square", "red", "pool table"]
    for f in [(0,), (0, (OR, 1)), (0, (OR, 1), (AND_NOT, 2)), (3, (AND, 0), (OR, 1))]:
        assert parse(to_text(f, names), names) == f
    assert to_text((0, (OR, 1), (AND_NOT, 2)), names) == "((circle OR square) AND NOT red)"
    assert canonical((0, (OR, 1), (AND_NOT, 2))) == canonical((1, (OR, 0), (AND_NOT, 2)))
    assert canonical((0, (AND_NOT, 1), (AND, 2))) == canonical((2, (AND, 0), (AND_NOT, 1)))
    assert canonical((0, (AND_NOT, 1))) != canonical((1, (AND_NOT, 0)))
    assert mentions("((pool table AND circle) OR red)", names) == {"pool table", "circle", "red"}
    with pytest.raises(FormulaError, match="did you mean square"):
        parse("(circle OR sqare)", names)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture()
def run_copy(engine_run, tmp_path):
    dst = tmp_path / "runs" / "r18"
    shutil.copytree(engine_run, dst)
    return dst


def test_explain_cli_writes_the_columns(run_copy, capsys):
    from dissect.__main__ import main
    assert main(["explain", str(run_copy), "--layer", "layer4", "--units", "0,1,2,3",
                 "--null", "2", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "held-out images" in out.err and "naive beam" in out.err
    df = pd.read_csv(run_copy / "layers" / "layer4" / "units.csv", keep_default_na=False)
    names = pd.read_csv(run_copy / "concepts.csv", keep_default_na=False)["name"].tolist()
    for col in ("formula", "formula_iou", "formula_iou_heldout", "formula_length",
                "formula_p_value", "formula_fallback"):
        assert col in df
    done = df[df["unit"] < 4]
    assert (done["formula"] != "").all()
    for _, r in done.iterrows():
        assert len(parse(r["formula"], names)) == r["formula_length"]
        assert 0 <= float(r["formula_iou_heldout"]) <= 1
        assert 1 / 3 <= float(r["formula_p_value"]) <= 1
        if r["formula_fallback"] in (True, "True"):
            assert r["formula"] == r["label"]
    assert (run_copy / "labels.npz").exists() and (run_copy / "layers/layer4/formulas.json").exists()
    assert (df.loc[df["unit"] >= 4, "formula"] == "").all()


@pytest.mark.parametrize("argv, message", [
    (["--length", "0"], "--length 0 must be at least 1"),
    (["--length", "11"], "--length 11 must be at most 10"),
    (["--mentions", "skyy"], "unknown concept 'skyy': did you mean sky"),
])
def test_explain_bad_options(run_copy, capsys, argv, message):
    from dissect.__main__ import main
    assert main(["explain", str(run_copy), "--quiet"] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_explain_without_label_data_names_the_command(run_copy, capsys):
    import json
    from dissect.__main__ import main
    info = json.loads((run_copy / "run.json").read_text())
    info["config"]["probe"] = f"broden:{run_copy.parent / 'gone'}"
    (run_copy / "run.json").write_text(json.dumps(info))
    assert main(["explain", str(run_copy), "--layer", "layer4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no usable label data" in err and "python -m dissect run" in err
    (run_copy / "layers" / "layer4" / "acts.npy").unlink()
    assert main(["explain", str(run_copy), "--layer", "layer4", "--quiet"]) == 2
    assert "--no-acts" in capsys.readouterr().err


def test_run_explain_flag(tmp_path):
    from dissect.__main__ import main
    probe = tmp_path / "sb"
    make_synthetic_broden(probe, n=8, image_size=48, mask_size=24, seed=0)
    out = tmp_path / "run"
    assert main(["run", "--model", "resnet18", "--weights", "none", "--layer", "conv1",
                 "--probe", f"broden:{probe}", "--batch-size", "4", "--workers", "0",
                 "--quiet", "--explain", "--explain-length", "2", "--out", str(out)]) == 0
    df = pd.read_csv(out / "layers" / "conv1" / "units.csv", keep_default_na=False)
    assert df["formula_length"].between(0, 2).all()
    assert (df["formula"] != "").sum() > 0
