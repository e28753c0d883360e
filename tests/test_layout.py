"""Token and channels-last layers read as maps (dissect.models.layout): known answers on planted units.

The same planted units given as B×C×H×W, as B×(1+H·W)×C with a class token, and as B×H×W×C
give byte-identical tables; an ablated channel of a token layer is zero at every patch token
and untouched in the class token; bad layouts fail in one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dissect.__main__ import main
from dissect.models.hooks import capture, intervene
from dissect.models.layout import (Layout, LayoutError, from_map, parse_grid, resolve, set_layout,
                            to_map)
from dissect.probes.synthetic_broden import make_synthetic_broden

REPO = Path(__file__).resolve().parent.parent
PLANTED = REPO / "tests" / "planted_layouts.py"


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("layout") / "sb"
    make_synthetic_broden(d, n=24, image_size=64, mask_size=32, seed=3, image_format="png")
    return d


def _run(probe: Path, out: Path, kind: str, *extra: str) -> Path:
    assert main(["run", "--model", f"{PLANTED}:build_{kind}", "--layer", "units",
                 "--probe", f"broden:{probe}", "--quantile", "0.02", "--workers", "0",
                 "--quiet", "--out", str(out), *extra]) == 0
    return out / "layers" / "units"


def test_three_layouts_give_byte_identical_tables(probe, tmp_path):
    folders = {k: _run(probe, tmp_path / k, k) for k in ("nchw", "tokens", "nhwc")}
    forced = _run(probe, tmp_path / "forced", "tokens", "--layout", "tokens", "--grid", "32x32",
                  "--prefix", "1")
    ref = folders["nchw"]
    tables = sorted(p.name for p in ref.iterdir() if p.suffix in (".csv", ".npy"))
    assert "units.csv" in tables
    for name in tables:
        for other in (folders["tokens"], folders["nhwc"], forced):
            assert (other / name).read_bytes() == (ref / name).read_bytes(), (other, name)
    import pandas as pd
    units = pd.read_csv(ref / "units.csv", keep_default_na=False)
    assert len(units) == 63 and units.loc[[0, 1], "iou"].min() > 0.2   # the planted detectors
    info = json.loads((tmp_path / "forced" / "run.json").read_text())["config"]
    assert (info["layout"], info["grid"], info["prefix"]) == ("tokens", "32x32", 1)
    assert json.loads((tmp_path / "tokens" / "run.json").read_text())["config"]["layout"] == "auto"


def _token_net() -> nn.Module:
    """A token layer `blocks.0` of B × (1 + 4·6) × 5 (class token first) and a head on it."""
    class Net(nn.Module):
        num_prefix_tokens = 1

        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(nn.Linear(5, 5))
            self.head = nn.Linear(5, 3)

        def forward(self, t):
            return self.head(self.blocks(t)[:, 0] + self.blocks(t)[:, 1:].mean(1))
    torch.manual_seed(0)
    return Net().eval()


def test_ablated_channel_is_zero_at_every_patch_token_and_untouched_in_the_class_token():
    net, t = _token_net(), torch.randn(2, 25, 5)
    set_layout(net, Layout(grid=(4, 6)))
    seen = {}

    def zero_unit_3(m):
        assert m.shape in ((2, 5, 4, 6), (2, 5, 1, 1))   # the grid (and the prefix, 1 x P)
        m = m.clone()
        m[:, 3] = 0
        return m

    with torch.no_grad():
        clean = net.blocks[0](t)
        with intervene(net, {"blocks.0": zero_unit_3}):
            h = net.blocks[0].register_forward_hook(lambda _m, _i, o: seen.update(o=o))
            net(t)
            h.remove()
    out = seen["o"]
    assert out.shape == clean.shape
    assert torch.count_nonzero(out[:, 1:, 3]) == 0                     # every patch token
    assert torch.equal(out[:, 0], clean[:, 0])                         # class token untouched
    assert torch.equal(out[:, 1:, [0, 1, 2, 4]], clean[:, 1:, [0, 1, 2, 4]])
    set_layout(net, Layout(grid=(4, 6), include_prefix=True))
    with torch.no_grad(), intervene(net, {"blocks.0": zero_unit_3}):
        h = net.blocks[0].register_forward_hook(lambda _m, _i, o: seen.update(o=o))
        net(t)
        h.remove()
    assert torch.count_nonzero(seen["o"][:, :, 3]) == 0                # --include-prefix: all


def test_capture_reads_tokens_as_a_map_and_from_map_inverts_it():
    net, t = _token_net(), torch.randn(2, 25, 5)
    set_layout(net, Layout(grid=(4, 6)))
    with torch.no_grad(), capture(net, ["blocks.0"]) as acts:
        net(t)
    tokens = net.blocks[0](t).detach()
    m = acts["blocks.0"]
    assert m.shape == (2, 5, 4, 6) and m.is_contiguous()
    assert torch.equal(m[:, :, 1, 2], tokens[:, 1 + 1 * 6 + 2])       # row-major after the class token
    assert torch.equal(from_map(m, like=tokens, model=net), tokens)
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(from_map(to_map(x, layout=Layout("nhwc")), x, layout=Layout("nhwc")), x)


def test_grid_and_prefix_come_from_the_model_or_a_square():
    t = torch.zeros(1, 197, 8)
    assert resolve(t) == resolve(t, layout=Layout("tokens"))
    r = resolve(t)
    assert (r.kind, r.grid, r.prefix) == ("tokens", (14, 14), 1)
    assert resolve(torch.zeros(1, 196, 8)).prefix == 0
    reg = nn.Module()
    reg.num_prefix_tokens = 5                                            # class + 4 registers
    assert resolve(torch.zeros(1, 201, 8), reg).grid == (14, 14)
    assert resolve(torch.zeros(1, 196, 8), reg).prefix == 0        # a patch embedding's output
    assert parse_grid("7x9") == (7, 9) and parse_grid("12") == (12, 12)


def test_bad_layouts_fail_in_one_clear_line():
    with pytest.raises(LayoutError, match=r"not a square grid.*--grid HxW"):
        resolve(torch.zeros(1, 1 + 4 * 7, 5))
    with pytest.raises(LayoutError, match=r"--layout nhwc .* 3-d output"):
        resolve(torch.zeros(1, 197, 5), layout=Layout("nhwc"))
    with pytest.raises(LayoutError, match=r"do not hold a 5x5 grid after 1 prefix"):
        resolve(torch.zeros(1, 197, 5), layout=Layout(grid=(5, 5), prefix=1))
    with pytest.raises(LayoutError, match=r"do not hold a 15x15 grid"):
        resolve(torch.zeros(1, 197, 5), layout=Layout(grid=(15, 15)))
    with pytest.raises(LayoutError, match="--grid"):
        parse_grid("fourteen")
    with pytest.raises(LayoutError, match="--layout"):
        Layout("nhcw")


def test_cli_names_the_fix_for_a_non_square_token_layer(probe, tmp_path, capsys):
    # 32·32 = 1024 patch tokens read with 2 prefix tokens: 1023 is no square
    rc = main(["run", "--model", f"{PLANTED}:build_tokens", "--layer", "units", "--probe",
               f"broden:{probe}", "--prefix", "2", "--workers", "0", "--quiet",
               "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--grid HxW" in err[0] and "Traceback" not in err[0]
    rc = main(["run", "--model", f"{PLANTED}:build_tokens", "--layer", "units", "--probe",
               f"broden:{probe}", "--layout", "nhwc", "--workers", "0", "--quiet",
               "--out", str(tmp_path / "bad2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--layout nhwc" in err[0] and "3-d" in err[0]


@pytest.mark.slow
def test_torchvision_vit_b_16_last_block_dissects_768_units_on_14x14(tmp_path):
    """Offline, random init: the torchvision ViT says its grid (image_size // patch_size) and
    its class token; a one-image ablation of a token layer moves the prediction (layer 10: the
    head reads only the class token, so the last block's patch tokens reach it through no path)."""
    make_synthetic_broden(tmp_path / "sb", n=4, image_size=224, mask_size=112, seed=1)
    out = tmp_path / "vit"
    layer = "encoder.layers.encoder_layer_11"
    assert main(["run", "--model", "vit_b_16", "--weights", "none", "--layer", layer,
                 "--probe", f"broden:{tmp_path / 'sb'}", "--batch-size", "4", "--workers", "0",
                 "--quiet", "--out", str(out)]) == 0
    import numpy as np
    import pandas as pd
    assert len(pd.read_csv(out / "layers" / layer / "units.csv")) == 768
    assert np.load(out / "layers" / layer / "acts.npy", mmap_mode="r").shape[-2:] == (14, 14)
    from dissect.models.registry import load_model
    lm = load_model("vit_b_16", "none")
    torch.manual_seed(0)
    nn.init.normal_(lm.model.heads.head.weight, std=0.02)   # torchvision zero-inits the head
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        before = lm.model(lm.normalize(x))
        with intervene(lm.model, {layer: lambda m: m * 0}):
            last = lm.model(lm.normalize(x))
        with intervene(lm.model, {"encoder.layers.encoder_layer_10": lambda m: m * 0}):
            after = lm.model(lm.normalize(x))
    assert torch.allclose(before, last, atol=1e-6)   # the class token is left alone
    assert not torch.allclose(before, after)
