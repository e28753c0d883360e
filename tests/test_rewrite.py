"""Rank-one rewriting: the closed form's algebra on real layers, the edit folder, bad input."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dissect.__main__ import main
from dissect.errors import RewriteError
from dissect.editing.memit import read_edits
from dissect.editing.rewrite import (SecondMoment, edit_target, edited, memit_update,
                             rank_one_update, regularised)
from dissect.toyworld.model import ToyWorldCNN, load_toyworld


def _moment(dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, 4 * dim, generator=g)
    mom = SecondMoment()
    mom.add(A[:, :2 * dim])
    other = SecondMoment()
    other.add(A[:, 2 * dim:])
    return mom.merge(other).matrix()


@pytest.mark.parametrize("layer", ["conv5", "fc"])
def test_closed_form_writes_the_key_exactly(layer):
    model = load_toyworld().model
    t = edit_target(model, layer)
    W = t.flat_weight().double()
    D = W.shape[1]
    C = _moment(D)
    g = torch.Generator().manual_seed(1)
    k, v = torch.rand(D, 1, generator=g), torch.randn(W.shape[0], 1, generator=g)
    upd = rank_one_update(W.float(), k, v, C)
    W1 = W + upd.delta.double()
    assert torch.allclose(W1 @ k.double(), v.double(), atol=1e-5)          # W k* = v*
    assert upd.rank == 1                                                    # rank(ΔW) = 1
    d = torch.linalg.solve(regularised(C.double()), k.double())            # C⁻¹k*
    cos = torch.nn.functional.cosine_similarity(upd.directions.double()[:, 0], d[:, 0], dim=0)
    assert abs(float(cos)) > 1 - 1e-6                                       # D ∝ C⁻¹k*
    o = torch.randn(D, 1, generator=g, dtype=torch.float64)
    o = o - d * (d.T @ o) / (d.T @ d)                                       # dᵀo = 0
    assert torch.allclose(W1 @ o, W @ o, atol=1e-6)                        # unchanged


def test_unfolded_conv_equals_the_conv_and_edit_restores():
    model = load_toyworld().model
    t = edit_target(model, "conv4")
    assert t.name == "conv4.0" and isinstance(t.module, nn.Conv2d)
    x = torch.rand(2, 48, 28, 28)
    keys = t.keys_of(x)                                      # B×D×L
    out = (t.flat_weight() @ keys).reshape(2, -1, 14, 14)
    assert torch.allclose(out, t.module(x), atol=1e-4)
    before = t.module.weight.clone()
    with pytest.raises(RuntimeError):
        with edited(model, t, torch.ones_like(t.flat_weight())):
            assert not torch.equal(t.module.weight, before)
            raise RuntimeError("boom")
    assert torch.equal(t.module.weight, before)


def test_a_linear_layer_of_a_vit_takes_one_key_per_patch_token_the_concept_covers():
    """A transformer MLP's fc2 runs at every token: its keys are the patch tokens whose 8 px
    cell the concept covers (never the class token), its values that token's output, and the
    closed form writes them as it does a conv's cells."""
    from dissect.editing.rewrite import keys_values, layer_io
    from dissect.toyworld.vit import load_toyworld_vit
    torch.manual_seed(0)
    lm = load_toyworld_vit("none")
    t = edit_target(lm.model, "blocks.3.mlp.fc2")
    x = torch.rand(2, 3, 224, 224)
    masks = torch.zeros(2, 224, 224, dtype=torch.bool)
    masks[0, :32, :48] = True                     # 16 px cells at 224: tokens (0..1, 0..2)
    masks[1, 208:, 208:] = True                   # token (13, 13) of image 1, its last one
    keys, values = keys_values(lm, t, x, x, masks)
    assert keys.shape == (192, 7) and values.shape == (96, 7)
    inp, out = layer_io(lm.model, t, lm.normalize(x))
    assert inp.shape == (2, 197, 192)
    assert torch.allclose(keys[:, 0], inp[0, 1])                # token (0, 0) is token 1
    assert torch.allclose(keys[:, -1], inp[1, 196])
    assert torch.allclose(values[:, -1], out[1, 196] - t.module.bias, atol=1e-6)
    upd = rank_one_update(t.flat_weight(), keys[:, :1], values[:, :1] + 1, _moment(192))
    assert torch.allclose((t.flat_weight() + upd.delta) @ keys[:, :1], values[:, :1] + 1,
                          atol=1e-3)
    with pytest.raises(RewriteError, match=r"blocks\.3\.mlp\.fc2, the block's last linear"):
        edit_target(lm.model, "blocks.3")


def test_memit_update_fits_keys_with_small_lambda():
    g = torch.Generator().manual_seed(0)
    W, K = torch.randn(5, 12, generator=g), torch.randn(12, 4, generator=g)
    R = torch.randn(5, 4, generator=g)
    d = memit_update(W, K, R, _moment(12), lam=1e-6)
    assert torch.allclose(d @ K, R, atol=1e-3)


def test_bad_layer_is_named():
    model = ToyWorldCNN()
    with pytest.raises(RewriteError, match="not a conv or linear layer"):
        edit_target(model, "pool")
    with pytest.raises(RewriteError, match="not a conv or linear layer"):
        edit_target(model, "conv5.1")


def test_bad_edit_files_name_line_and_field(tmp_path):
    f = tmp_path / "rules.jsonl"
    f.write_text('{"concept": "sea", "style": "snow"}\n# a comment\n{"concept": "road"}\n')
    with pytest.raises(RewriteError, match=r"line 3: field 'style' is missing"):
        read_edits(str(f))
    f.write_text('{"concept": "sea", "style": "snow"}\n{"concept": "sea", "style": "ice"}\n')
    with pytest.raises(RewriteError, match=r"line 2: field 'style': unknown style 'ice'"):
        read_edits(str(f))
    f.write_text('{"concept": "sea", "style": "snow", "exemplars": "3"}\n')
    with pytest.raises(RewriteError, match=r"line 1: field 'exemplars' must be a int"):
        read_edits(str(f))
    f.write_text('not json\n')
    with pytest.raises(RewriteError, match=r"line 1: not a JSON object"):
        read_edits(str(f))


def test_cli_bad_input(tmp_path, capsys):
    base = ["rewrite", "--model", "toyworld", "--out", str(tmp_path / "e"), "--exemplars", "1"]
    assert main(base + ["--layer", "conv5", "--concept", "sea", "--style", "ice"]) == 2
    assert "snow, wood, gravel, flowers, grayscale" in capsys.readouterr().err
    assert main(base + ["--layer", "pool", "--concept", "sea", "--style", "snow"]) == 2
    assert "not a conv or linear layer" in capsys.readouterr().err
    assert main(base + ["--layer", "conv5", "--concept", "sea", "--style", "snow",
                        "--exemplar-index", "0"]) == 2          # image 0 of world 7: no sea
    assert "does not show 'sea'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def _sha(path) -> str:
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_cli_writes_a_loadable_edit_and_never_the_original(tmp_path, monkeypatch, capsys):
    from dissect.models.registry import load_model
    from dissect.toyworld.model import DEFAULT_WEIGHTS
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    sha = _sha(DEFAULT_WEIGHTS)
    out = tmp_path / "edit"
    args = ["rewrite", "--model", "toyworld", "--layer", "conv6", "--concept", "sea", "--style",
            "snow", "--exemplars", "1", "--heldout", "24", "--heldout-styles", "snow",
            "--probe-images", "20", "--json"]
    assert main(args + ["--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rank"] == 1 and doc["weight"] == "conv6.0.weight" and doc["figures"]["rank"] == 1
    saved = json.loads((out / "edit.json").read_text())
    assert saved["rule"] == "sea drawn as snow -> sea" and saved["heldout"]
    lm0, lm1 = load_model("toyworld", "default"), load_model("toyworld", str(out / "weights.safetensors"))
    d = (lm1.model.conv6[0].weight - lm0.model.conv6[0].weight).reshape(128, -1)
    assert torch.linalg.matrix_rank(d).item() == 1
    assert all(torch.equal(a, b) for (k, a), (_, b) in zip(lm0.model.state_dict().items(),
                                                          lm1.model.state_dict().items())
               if not k.startswith("conv6.0.weight"))
    assert _sha(DEFAULT_WEIGHTS) == sha
    assert doc["figures"]["moment_cached"] is False
    assert main(args + ["--out", str(out)]) == 2                       # exists: no overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--out", str(DEFAULT_WEIGHTS.parent), "--overwrite"]) == 2
    assert "never overwrite the original" in capsys.readouterr().err
    assert _sha(DEFAULT_WEIGHTS) == sha


@pytest.mark.slow
def test_rewrite_goals_on_toyworld(tmp_path, monkeypatch):
    """≤3 exemplars: ≥50% of errors corrected across classes with the concept, clean accuracy
    drops ≤1 point, better than fine-tuning on the other classes (Santurkar et al.'s table);
    on a whole unseen world, ≥40% of the snow-caused errors won back, ≤1 point of clean lost."""
    from dissect.editing.rule import RewriteConfig, rewrite, summary
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    cfg = RewriteConfig(layer="conv6", concept="sea", style="snow", exemplars=3, rank=1,
                        heldout=300, probe_images=300, heldout_styles=["snow", "wood"],
                        baseline="finetune", world_images=300)
    res = rewrite(cfg)
    ours, ft = summary(res, "rewrite"), summary(res, "finetune")
    f = res["figures"]
    assert ours["exemplar style / all"] >= 0.5, ours
    assert f["clean_acc_before"] - f["clean_acc_after"] <= 0.01, f
    assert ours["exemplar style / other classes"] > ft["exemplar style / other classes"], (ours, ft)
    world = res["measures"]["world"]
    assert world["style_errors_corrected"] >= 0.4, world
    assert world["clean_acc_lost"] <= 0.01, world


def test_memit_cli_reports_accuracy_as_rules_grow(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    rules = tmp_path / "rules.jsonl"
    rules.write_text('{"concept": "sea", "style": "snow", "exemplars": 1}\n'
                     '{"concept": "road", "style": "wood", "exemplars": 1}\n')
    assert main(["rewrite", "--model", "toyworld", "--layer", "conv5,conv6", "--edits", str(rules),
                 "--heldout", "24", "--probe-images", "20", "--out", str(tmp_path / "m"),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["rules"] for c in doc["curve"]] == [1, 2]
    assert [p["applied"] for p in doc["curve"][0]["per_rule"]] == [True, False]
    assert (tmp_path / "m" / "weights.safetensors").is_file()


def test_whole_world_figure_is_what_ablate_reports_on_the_saved_weights(tmp_path, monkeypatch,
                                                                         capsys):
    """edit.json's whole-world figure is exactly `ablate --set toyworld:N --restyle C:S --seed W`
    on the saved edited weights (and on the original ones for "before"), beside the protocol."""
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "edit"
    assert main(["rewrite", "--model", "toyworld", "--layer", "conv6", "--concept", "sea",
                 "--style", "snow", "--exemplars", "3", "--heldout", "40", "--heldout-styles",
                 "snow", "--probe-images", "20", "--world-images", "60", "--world-seed", "5",
                 "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "edit.json").read_text())
    assert saved["measures"] == doc["measures"]
    proto, world = doc["measures"]["protocol"], doc["measures"]["world"]
    assert proto["errors_before"] > 0 and 0 < proto["corrected"] <= 1
    for name, restyle in (("restyled", ["--restyle", "sea:snow"]), ("clean", [])):
        got = {}
        for which, weights in (("before", "default"), ("after", str(out / "weights.safetensors"))):
            assert main(["ablate", "--model", "toyworld", "--weights", weights, "--set",
                         "toyworld:60", "--seed", "5", "--json"] + restyle) == 0
            got[which] = json.loads(capsys.readouterr().out)["acc_after"]
        w = world[name]
        assert (w["acc_before"], w["acc_after"]) == pytest.approx((got["before"], got["after"]),
                                                                  abs=1e-6), name
        assert w["corrected"] - w["broken"] == round((w["acc_after"] - w["acc_before"]) * 60)
    gap = world["clean"]["acc_before"] - world["restyled"]["acc_before"]
    assert gap > 0 and world["style_errors_corrected"] == pytest.approx(
        (world["restyled"]["acc_after"] - world["restyled"]["acc_before"]) / gap, abs=1e-5)
    assert world["style_errors_corrected"] > 0          # the same kind: both say the edit helps


@pytest.mark.slow
def test_many_rules_hold_as_rules_are_added(tmp_path, monkeypatch):
    """Three concept x style rules written into conv6 one by one (benchmarks/bench_memit.py
    prints the same table for 12): with one ROME direction per rule fitted jointly (--method
    ranked) the first rule stays repaired as the others are added, the rules written gain on
    average, and clean accuracy holds; MEMIT's λC + KKᵀ (λ = keys) loses more clean accuracy."""
    from dissect.editing.rule import RewriteConfig
    from dissect.editing.memit import memit
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    rules = [{"concept": c, "style": "snow", "exemplars": 3} for c in ("sea", "road", "house")]
    cfg = RewriteConfig(layer="conv6", heldout=120, probe_images=200)
    res = memit(cfg, rules, ["conv6"], method="ranked")
    clean0 = res["figures"]["clean_acc_before"]
    curve = res["curve"]
    assert [c["rules"] for c in curve] == [1, 2, 3]
    for row in curve:
        per = row["per_rule"]
        assert [p["applied"] for p in per] == [i < row["rules"] for i in range(3)]
        assert per[0]["acc_after"] >= per[0]["acc_before"] + 0.25, row      # sea:snow holds
        assert clean0 - row["clean_acc"] <= 0.01, row
    last = curve[-1]["per_rule"]
    assert sum(p["acc_after"] - p["acc_before"] for p in last) / 3 >= 0.1, last
    lam = memit(cfg, rules, ["conv6"])                                      # λ = number of keys
    assert clean0 - lam["curve"][-1]["clean_acc"] > clean0 - curve[-1]["clean_acc"]


def test_rank_auto_is_chosen_on_the_validation_world_within_the_budget(tmp_path, monkeypatch,
                                                                       capsys):
    from dissect.editing.rule import AUTO_RANKS, RewriteConfig, rewrite
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path / "cache"))
    cfg = RewriteConfig(layer="conv6", concept="sea", style="snow", exemplars=1, rank=0,
                        heldout=24, heldout_styles=["snow"], probe_images=20, world_images=0,
                        val_images=40)
    res = rewrite(cfg)
    c = res["rank_choice"]
    assert [r["rank"] for r in c["candidates"]] == list(AUTO_RANKS)
    kept = [r for r in c["candidates"] if r["clean_lost"] <= cfg.clean_budget + 1e-9]
    if kept:        # the most restyled gain among the ranks within the clean budget
        assert c["rank"] in [r["rank"] for r in kept]
        assert max(r["restyled_gain"] for r in kept) == next(
            r["restyled_gain"] for r in c["candidates"] if r["rank"] == c["rank"])
    assert res["rank"] == c["rank"] and "world" not in res["measures"]
    assert torch.linalg.matrix_rank(res["delta"].float()).item() == c["rank"]
    with pytest.raises(SystemExit):
        main(["rewrite", "--model", "toyworld", "--layer", "conv6", "--concept", "sea",
              "--style", "snow", "--rank", "zero", "--out", str(tmp_path / "e")])
    assert "give 1, 2, ... or auto" in capsys.readouterr().err
    assert main(["rewrite", "--model", "toyworld", "--layer", "conv6", "--concept", "sea",
                 "--style", "snow", "--min-cover", "0", "--out", str(tmp_path / "e")]) == 2
    assert "--min-cover 0" in capsys.readouterr().err
