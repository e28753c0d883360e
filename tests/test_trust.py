"""Trust columns on planted units with known answers, the re-aggregation's exactness, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import dissect.engine.results as results
from dissect.__main__ import main
from dissect.engine.config import DissectConfig
from dissect.engine.dissection import dissect
from dissect.trust.nulls import benjamini_hochberg, permutation_p
from dissect.probes.synthetic_broden import make_synthetic_broden
from dissect.trust.per_image import subset_tally
from dissect.trust.columns import NULL_COLUMNS, verdict

REPO = Path(__file__).resolve().parent.parent
PLANTED = f"{REPO / 'tests' / 'planted_model.py'}:build"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A --null 999 run of the planted model on 120 generated Broden images."""
    base = tmp_path_factory.mktemp("planted")
    make_synthetic_broden(base / "sb", n=120, image_size=64, mask_size=32, seed=3,
                          image_format="png")
    out = base / "run"
    assert main(["run", "--model", PLANTED, "--layer", "units", "--probe", f"broden:{base / 'sb'}",
                 "--quantile", "0.02", "--null", "999", "--workers", "0", "--quiet",
                 "--out", str(out)]) == 0
    units = pd.read_csv(out / "layers" / "units" / "units.csv", keep_default_na=False)
    return out, units


def test_planted_detectors_are_significant_and_localised(planted):
    _, u = planted
    for unit, labels in ((0, {"white", "house"}), (1, {"purple", "tree"})):
        row = u.iloc[unit]
        assert row["label"] in labels
        assert row["significant"] and row["p_value"] <= 0.002 and row["p_localised"] <= 0.01
        assert row["iou_lo"] <= row["iou"] <= row["iou_hi"] and row["iou_lo"] > 0.2
        assert row["label_stability"] > 0.9 and row["iou_heldout"] > 0.2
        assert verdict(row) == "localised detector"


def test_planted_cooccurrence_is_associated_not_localised(planted):
    _, u = planted
    row = u.iloc[2]
    assert row["significant"] and row["p_value"] <= 0.002
    assert row["p_localised"] > 0.2
    assert verdict(row) == "co-occurs only"


def test_planted_null_units_are_calibrated(planted):
    """Fixed-position and hash-noise units: near-uniform p, at most ~5% significant."""
    _, u = planted
    null = u.iloc[3:]
    assert len(null) == 60
    assert null["significant"].mean() <= 0.05
    assert (null["p_value"] <= 0.05).mean() <= 0.1
    assert 0.35 <= null["p_value"].mean() <= 0.65
    assert stats.kstest(null["p_value"], "uniform").pvalue > 0.01
    noise = u.iloc[23:]        # hash noise: the roll null is calibrated too
    assert stats.kstest(noise["p_localised"], "uniform").pvalue > 0.01
    assert all(verdict(r) == "not distinguishable from chance" for _, r in null.iterrows()
               if not r["significant"])


def test_null_npz_holds_the_distributions(planted):
    out, u = planted
    z = np.load(out / "layers" / "units" / "null.npz")
    assert z["null"].shape == (len(u), 999) and z["loc_null"].shape == (len(u), 999)
    p = permutation_p(z["observed"], z["null"])
    perm = (u["p_method"] == "permutation").to_numpy()
    np.testing.assert_allclose(p[perm], u["p_value"][perm], rtol=1e-6)
    assert (u["p_value"][~perm] <= p[~perm] * (1 + 1e-6)).all()    # tail fits only go lower
    from dissect.runs.export import export_run
    for fmt, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet)):
        table = read(export_run(out, fmt, out=out.parent / f"units.{fmt}")[0])
        assert {"iou_heldout", *NULL_COLUMNS} <= set(table.columns)


def test_per_image_statistics_reproduce_the_tally(tmp_path, monkeypatch):
    """Re-aggregating per-image statistics with weight 1 gives the engine's integer tallies;
    two disjoint halves add up to the whole; iou_heldout is written without --null."""
    make_synthetic_broden(tmp_path / "sb", n=30, image_size=64, mask_size=32, seed=2)
    seen = {}
    real = results.trust_columns

    def spy(units, sp, iou, cfg, images, cc, n_cats, index):
        seen[index] = (sp, cc)
        return real(units, sp, iou, cfg, images, cc, n_cats, index)

    monkeypatch.setattr(results, "trust_columns", spy)
    cfg = DissectConfig(model="resnet18", weights="none", layers=["layer3", "layer4"],
                        probe=f"broden:{tmp_path / 'sb'}", batch_size=8, workers=0,
                        heldout="random")
    out = dissect(cfg, tmp_path / "run", progress=False)
    for index, layer in enumerate(cfg.layers):
        sp, cc = seen[index]
        ref = np.load(out / "layers" / layer / "tally.npz")
        whole = subset_tally(sp, np.ones(sp.n), cc)
        half = np.arange(sp.n) % 2 == 0
        a, b = subset_tally(sp, half, cc), subset_tally(sp, ~half, cc)
        for f in ("inter", "truth", "act", "act_nd", "act_lite"):
            assert np.array_equal(getattr(whole, f).numpy(), ref[f]), f
            assert np.array_equal((getattr(a, f) + getattr(b, f)).numpy(), ref[f]), f
        units = pd.read_csv(out / "layers" / layer / "units.csv")
        assert units["iou_heldout"].between(0, 1).all() and units["iou_heldout"].gt(0).any()
        assert not set(NULL_COLUMNS) & set(units.columns)


def test_benjamini_hochberg_and_p_formula():
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    np.testing.assert_allclose(q, [0.04, 0.0533333, 0.0533333, 0.5], rtol=1e-4)
    p = permutation_p(np.array([1.0, 0.5, 0.0]), np.array([[0.2, 0.4, 1.0], [0.6, 0.7, 0.1],
                                                           [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p, [2 / 4, 3 / 4, 1.0])


@pytest.mark.parametrize("args, words", [
    (["--null", "5"], "--null 5"),
    (["--null", "--limit", "10"], "at least 20 images"),
    (["--heldout", "split"], "no train/val split"),
])
def test_bad_trust_options_fail_with_one_line(tmp_path, capsys, args, words):
    make_synthetic_broden(tmp_path / "sb", n=24, image_size=32, mask_size=16, val_fraction=0.0)
    rc = main(["run", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
               "--probe", f"broden:{tmp_path / 'sb'}", "--quiet", "--workers", "0",
               "--out", str(tmp_path / "run")] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and words in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run" / "layers").exists()


def test_null_flag_defaults_to_1000():
    from dissect.__main__ import build_parser
    base = ["run", "--model", "m", "--layer", "l", "--probe", "p", "--out", "o"]
    assert build_parser().parse_args(base + ["--null"]).null == 1000
    assert build_parser().parse_args(base + ["--null", "50"]).null == 50
    assert build_parser().parse_args(base).null == 0


def test_pages_show_verdicts_filters_and_nulls(planted, tmp_path, monkeypatch):
    """Unit detail says the verdict in words; the browser filters on significant; the overview
    counts significant units (real AppTest on the planted --null run)."""
    import shutil

    from streamlit.testing.v1 import AppTest
    out, u = planted
    shutil.copytree(out, tmp_path / "planted")
    monkeypatch.setenv("DISSECT_RUNS", str(tmp_path))

    def page(name: str, **params) -> AppTest:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        for k, v in {"run": "planted", "layer": "units", **params}.items():
            at.query_params[k] = str(v)
        at.run()
        if name:
            at.switch_page(name)
            at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    said = lambda at: "\n".join(str(e.value) for e in at.markdown)  # noqa: E731
    assert "Verdict: co-occurs only" in said(page("pages/unit_detail.py", unit=2))
    detail = page("pages/unit_detail.py", unit=0)
    assert "Verdict: localised detector" in said(detail)
    assert [m.label for m in detail.metric][:2] == ["Held-out IoU", "95% interval"]
    browser = page("pages/unit_browser.py", sig=1)
    n_sig = int(u["significant"].sum())
    assert any(f"Cards ({n_sig})" in t.label for t in browser.tabs)
    overview = page("")
    assert f"{n_sig} significant (q ≤ 0.05)" in said(overview)
