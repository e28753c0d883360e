"""Causal tracing on the trained ToyWorld CNN: exact restores, zero outside the receptive field,
the sun's effect on the sun's cells, and the CLI (real renders, real model)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dissect.__main__ import main
from dissect.toyworld.generate import render
from dissect.toyworld.model import load_toyworld
from dissect.toyworld.world import OBJECTS
from dissect.editing.tracing import (_restore_cells_generic, changed_cells, corrupt_images, trace,
                             trace_batch)

SUN = OBJECTS.index("sun") + 1
LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"]


@pytest.fixture(scope="module")
def sun_images():
    imgs, masks = [], []
    for i in range(60):
        s = render(1000, i)
        if (s.obj == SUN).mean() > 0.01:
            imgs.append(torch.from_numpy(s.rgb).permute(2, 0, 1).float() / 255)
            masks.append(torch.from_numpy(s.obj == SUN))
        if len(imgs) == 4:
            break
    return torch.stack(imgs), torch.stack(masks)


@pytest.fixture(scope="module")
def lm():
    return load_toyworld()


@pytest.fixture(scope="module")
def traced(lm, sun_images):
    with torch.no_grad():
        return trace(lm, *sun_images, LAYERS, seed=0)


def test_restoring_every_position_gives_the_clean_prediction(traced):
    for layer in LAYERS:
        assert np.array_equal(traced.restored_all[layer], traced.p_clean), layer
    assert np.abs(traced.p_clean - traced.p_corrupt).max() > 0.01     # the corruption matters


def _footprint(mask224: torch.Tensor, model) -> dict[str, torch.Tensor]:
    """Geometric receptive-field footprint of the mask on each layer's grid (conv arithmetic)."""
    m = F.adaptive_max_pool2d(mask224[:, None].float(), 112)      # the model's input pooling
    out = {}
    for layer in LAYERS:
        conv = getattr(model, layer)[0]
        m = F.max_pool2d(F.pad(m, [conv.padding[0]] * 4), conv.kernel_size, conv.stride,
                         dilation=conv.dilation)
        out[layer] = m[:, 0] > 0
    return out


def test_cells_outside_every_receptive_field_have_zero_effect(lm, sun_images, traced):
    x, masks = sun_images
    foot = _footprint(masks, lm.model)
    x_bad = corrupt_images(x, masks, "noise", seed=0, std=float(x.std()))
    rng = np.random.default_rng(0)
    with torch.no_grad(), __import__("dissect.models.hooks", fromlist=["capture"]).capture(
            lm.model, LAYERS) as clean:
        lm.model(lm.normalize(x))
    top = torch.from_numpy(traced.top)
    p_bad = torch.from_numpy(traced.p_corrupt)
    for layer in ("conv2", "conv5"):
        outside = ~foot[layer]
        assert outside.any()
        assert np.all(traced.cells[layer][outside.numpy()] == 0.0)    # the fast path skips them
        b, i, j = (t[rng.choice(len(t), 12, replace=False)] for t in torch.nonzero(outside).T)
        ij = torch.stack([i, j], 1)
        with torch.no_grad():        # and restoring them for real changes nothing
            p = _restore_cells_generic(lm, x_bad, layer, b, ij, clean[layer][b, :, i, j], top[b])
        assert (p - p_bad[b]).abs().max() < 1e-6


def test_windowed_suffix_equals_hooked_forward(lm, sun_images):
    x, masks = sun_images[0][:1], sun_images[1][:1]
    x_bad = corrupt_images(x, masks, "blur")
    with torch.no_grad():
        fast = trace_batch(lm, x, x_bad, ["conv4", "conv6"])
        slow = trace_batch(lm, x, x_bad, ["conv4", "conv6"], generic=True)
    assert fast["method"] == "windowed suffix" and slow["method"] == "hooked forward"
    for layer in ("conv4", "conv6"):
        assert torch.allclose(fast["cells"][layer], slow["cells"][layer], atol=1e-6)
        assert fast["cells"][layer].abs().max() > 1e-4


def test_sun_effect_concentrates_on_the_sun(traced):
    for layer in ("conv4", "conv5"):
        assert traced.concentration(layer) > 0.7, layer
        peaks = [np.unravel_index(np.argmax(g), g.shape) for g in traced.cells[layer]]
        on = [traced.masks[layer][b][p] for b, p in enumerate(peaks)]
        assert np.mean(on) >= 0.75, f"{layer}: best cells off the sun"


def test_hooks_are_gone_after_tracing(lm, traced):
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0
               for m in lm.model.modules())


def test_changed_cells_ignores_identical_maps():
    a = torch.rand(2, 4, 5, 5)
    b = a.clone()
    b[1, 2, 3, 1] += 1
    ch = changed_cells(a, b)
    assert ch.sum() == 1 and ch[1, 3, 1]


def test_trace_cli_json_and_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISSECT_CACHE", str(tmp_path))
    assert main(["trace", "--model", "toyworld", "--concept", "sun", "--probe", "toyworld:20",
                 "--seed", "1000", "--limit", "2", "--layers", "conv4,conv6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in out["layers"]] == ["conv4", "conv6"]
    assert out["images"] == 2 and np.array(out["layers"][0]["grid"]).shape == (14, 14)
    assert main(["trace", "--model", "toyworld", "--concept", "volcano", "--probe",
                 "toyworld:20", "--seed", "1000"]) == 2
    assert "concept 'volcano' is not in the probe" in capsys.readouterr().err
    assert main(["trace", "--model", "toyworld", "--concept", "sun", "--set", "folder:/nope"]) == 2
    assert "no concept masks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["trace", "--model", "toyworld", "--concept", "sun", "--probe", "toyworld:20",
              "--corrupt", "smudge"])


def _fast_vs_slow(lm, x, x_bad, layers):
    with torch.no_grad():
        fast = trace_batch(lm, x, x_bad, layers)
        slow = trace_batch(lm, x, x_bad, layers, generic=True)
    assert fast["method"] == "windowed suffix" and slow["method"] == "hooked forward"
    assert torch.equal(fast["p_corrupt"], slow["p_corrupt"])
    for layer in layers:
        assert fast["runs"][layer] == slow["runs"][layer] > 0, layer
        assert torch.allclose(fast["cells"][layer], slow["cells"][layer], atol=1e-6), layer
        assert torch.allclose(fast["all"][layer], slow["all"][layer], atol=1e-6), layer
    return fast


def test_difference_suffix_equals_hooked_forward_on_every_layer(lm, sun_images):
    """Strided, dilated and 1×1 windows, cells at the map's edge: the noise trace of one image."""
    x, masks = sun_images[0][:1], sun_images[1][:1]
    x_bad = corrupt_images(x, masks, "noise", seed=3)
    fast = _fast_vs_slow(lm, x, x_bad, LAYERS)
    assert any(fast["cells"][l].abs().max() > 1e-4 for l in LAYERS)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_difference_suffix_other_pointwise_orders_and_pooling(lm, sun_images, pool):
    """A chain with ReLU before BN (modules run, not folded), a BN without ReLU (windows
    masked, last stage included) and either pooling still equals the hooked forward."""
    import copy
    from types import SimpleNamespace
    from torch import nn
    model = copy.deepcopy(lm.model).eval()
    conv3, bn3 = model.conv3[0], model.conv3[1]
    model.conv3 = nn.Sequential(conv3, nn.ReLU(), bn3)
    model.conv5 = nn.Sequential(model.conv5[0], model.conv5[1])
    model.conv6 = nn.Sequential(model.conv6[0], model.conv6[1], nn.Identity())
    model.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
    other = SimpleNamespace(model=model, normalize=lm.normalize, device=lm.device)
    x, masks = sun_images[0][1:2], sun_images[1][1:2]
    x_bad = corrupt_images(x, masks, "noise", seed=0)
    _fast_vs_slow(other, x, x_bad, ["conv2", "conv3", "conv5", "conv6"])


def test_suffix_probs_from_a_plain_capture(lm, sun_images):
    """`ConvChain.suffix_probs` also takes a plain capture of the stage outputs (the conv
    outputs are then recomputed), and gives what the trace gave."""
    from dissect.models.hooks import capture
    from dissect.editing.conv_chain import ConvChain
    x, masks = sun_images[0][:2], sun_images[1][:2]
    x_bad = corrupt_images(x, masks, "noise", seed=0)
    chain = ConvChain.of(lm.model)
    with torch.no_grad():
        res = trace_batch(lm, x, x_bad, ["conv3"])
        with capture(lm.model, LAYERS) as clean:
            lm.model(lm.normalize(x))
        with capture(lm.model, chain.names) as corr:
            lm.model(lm.normalize(x_bad))
        todo = torch.nonzero(res["cells"]["conv3"])[:50]
        b, ij = todo[:, 0], todo[:, 1:]
        p = chain.suffix_probs("conv3", corr, b, ij, clean["conv3"][b, :, ij[:, 0], ij[:, 1]],
                               res["top"][b])
    assert torch.allclose(p - res["p_corrupt"][b], res["cells"]["conv3"][b, ij[:, 0], ij[:, 1]],
                          atol=1e-6)
