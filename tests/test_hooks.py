"""Hooks own their lifetime: nothing outlives a `with` block, even one that raised."""
import pytest
import torch
from torch import nn

from dissect.errors import LayerNotFound
from dissect.models.hooks import capture, get_layer, intervene, stopped_forward


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(4, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_capture_and_intervene_remove_hooks():
    net, x = _net(), torch.randn(2, 3, 8, 8)
    with capture(net, ["0", "2"]) as acts:
        net(x)
    assert set(acts) == {"0", "2"} and _hook_count(net) == 0
    with intervene(net, {"2": lambda o: o * 0}):
        assert torch.count_nonzero(net(x)) == 0
    assert _hook_count(net) == 0 and torch.count_nonzero(net(x)) > 0


def test_no_hook_remains_after_an_exception():
    net, x = _net(), torch.randn(1, 3, 8, 8)

    def boom(_out):
        raise RuntimeError("edit failed")

    with pytest.raises(RuntimeError, match="edit failed"):
        with intervene(net, {"0": boom}):
            net(x)
    assert len(net[0]._forward_hooks) == 0
    with pytest.raises(ValueError):
        with capture(net, ["0", "2"]):
            raise ValueError("user code failed")
    assert len(net[0]._forward_hooks) == 0 and len(net[2]._forward_hooks) == 0


def test_ablate_context_removes_hooks_after_exception():
    from dissect.interventions.ablation import Intervention, ablate
    from dissect.errors import AblationError
    net, x = _net(), torch.randn(1, 3, 8, 8)
    with pytest.raises(AblationError, match="out of range"):
        with ablate(net, [Intervention("0", (99,))]):
            net(x)
    assert _hook_count(net) == 0


def test_inplace_relu_does_not_alter_captured_output():
    net, x = _net(), torch.randn(2, 3, 8, 8)
    with capture(net, ["0"]) as acts:
        net(x)
    assert (acts["0"] < 0).any()                   # the conv output before the in-place ReLU
    assert torch.allclose(acts["0"], net[0](x))


def test_stop_after_and_unknown_layer():
    net, x = _net(), torch.randn(1, 3, 8, 8)
    with capture(net, ["0"], stop_after=True) as acts:
        stopped_forward(net, x)
    assert acts["0"].shape == (1, 4, 8, 8) and _hook_count(net) == 0
    with pytest.raises(LayerNotFound, match="Did you mean"):
        get_layer(net, "00")


def test_stop_after_holds_for_every_pass_of_one_block():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    with capture(net, ["0", "2"], stop_after=True) as acts:
        for size in (8, 10):
            stopped_forward(net, torch.randn(1, 3, size, size))
            assert acts["2"].shape[-1] == size - 4, "second layer must be captured on every pass"
    assert not net._forward_hooks and not net._forward_pre_hooks
