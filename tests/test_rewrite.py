"""Rank-one rewriting: the closed form's algebra on real layers, the edit folder, bad input."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dissect.__main__ import main
from dissect.errors import RewriteError
from dissect.memit import read_edits
from dissect.rewrite import (SecondMoment, Target, edit_target, edited, memit_update,
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
