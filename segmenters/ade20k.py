"""ADE20K objects (150 classes) per pixel, by a UPerNet-ConvNeXt model through HF transformers.

    seg = ADE20KSegmenter()                                   # openmmlab/upernet-convnext-small
    seg = ADE20KSegmenter("/models/upernet")                  # a save_pretrained folder
    [out] = seg.segment(images_uint8, mask_size=(112, 112))   # out.pixel["object"]: 1×112×112

Weights come from the given folder, or from the Hugging Face cache ($HF_HOME / $HF_HUB_CACHE):
a model already there loads without any network; otherwise, online, transformers downloads it
into that cache (with progress bars). Offline (`--offline` / DISSECT_OFFLINE=1, HF_HUB_OFFLINE=1,
or no route to the hub within seconds) a missing model raises SegmenterError at once, saying how
to obtain it. The model is loaded on the first `segment` call, so a folder probe whose
segmentations are all cached never needs the weights. Class names come from
`ade20k_classes.txt` (SceneParsing-150 order; model label k is concept id k + 1).
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segmenters.base import Segmentation, SegmenterError, check_images

DEFAULT_MODEL = "openmmlab/upernet-convnext-small"
MEAN = (0.485, 0.456, 0.406)   # the openmmlab checkpoints' preprocessor (ImageNet statistics)
STD = (0.229, 0.224, 0.225)


@lru_cache(maxsize=1)
def ade20k_classes() -> list[str]:
    """The 150 ADE20K SceneParsing class names, in the models' label order."""
    return Path(__file__).with_name("ade20k_classes.txt").read_text().split("\n")[:150]


def offline_message(model: str, why: str = "") -> str:
    """How to obtain the weights when they are not on this machine."""
    return (
        f"ADE20K segmenter: no weights for '{model}' on this machine (looked in the Hugging Face "
        "cache $HF_HOME/hub, ~/.cache/huggingface/hub by default) and "
        + (f"cannot download them: {why}. " if why else "could not download them. ")
        + f"They come from {hub_url(model)}. On a machine with internet run: python -c "
        "\"from transformers import UperNetForSemanticSegmentation "
        f"as M; M.from_pretrained('{model}').save_pretrained('upernet-ade20k')\", copy the "
        "folder here and use --segmenter ade20k:PATH/upernet-ade20k (or copy the HF cache)")


def hub_url(model: str) -> str:
    """The model's page on the Hugging Face hub (or $HF_ENDPOINT)."""
    return f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co').rstrip('/')}/{model}"


def hub_offline_reason(model: str) -> str | None:
    """Why the hub cannot be reached now (HF_HUB_OFFLINE, --offline, no route), or None."""
    from dissect.models.fetch import offline_reason
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    return offline_reason(hub_url(model))


class ADE20KSegmenter:
    """150 ADE20K object classes per pixel (category "object") from a local UPerNet model."""

    name = "ade20k"
    categories = ["object"]
    pixel_categories = ["object"]
    scalar_categories: list[str] = []
    from_files = False
    description = ("ADE20K objects (150 classes) by UPerNet-ConvNeXt; its weights come from the "
                   "Hugging Face cache (downloaded there when online) or a save_pretrained "
                   "folder (ade20k:PATH)")

    def __init__(self, model: str | None = None, *, device: str = "cpu", input_size: int = 512,
                 batch_size: int = 4) -> None:
        self.model_ref = model or DEFAULT_MODEL
        local = Path(self.model_ref).expanduser()
        self.local = local.is_dir()
        if self.local:
            self.model_ref = str(local.resolve())
        elif self.model_ref.startswith((".", "/", "~")):
            raise SegmenterError(f"ADE20K segmenter: no model folder at {self.model_ref}; "
                                 "pass a save_pretrained folder or a Hugging Face model id")
        self.device = device
        self.input_size = input_size
        self.batch_size = batch_size
        self._model = None

    @property
    def version(self) -> str:
        """Cache key part: changes with the model folder's files and the input size."""
        return "1-" + hashlib.sha1(self._identity().encode()).hexdigest()[:10]

    def _identity(self) -> str:
        """What the outputs depend on: the model (folder contents' sizes/mtimes) and input size."""
        ident = f"{self.model_ref}|{self.input_size}"
        if self.local:
            for f in sorted(Path(self.model_ref).iterdir()):
                st = f.stat()
                ident += f"|{f.name}:{st.st_size}:{int(st.st_mtime)}"
        return ident

    def load(self):
        """Load (once) the model: the folder or HF cache first, else download it when online."""
        if self._model is None:
            from transformers import UperNetForSemanticSegmentation
            try:
                model = UperNetForSemanticSegmentation.from_pretrained(
                    self.model_ref, local_files_only=True)
            except (OSError, ValueError) as e:   # LocalEntryNotFoundError is both
                if self.local:
                    raise SegmenterError(f"ADE20K segmenter: {self.model_ref} is not a "
                                         f"save_pretrained UperNet folder ({e})") from None
                why = hub_offline_reason(self.model_ref)
                if why:
                    raise SegmenterError(offline_message(self.model_ref, why)) from None
                try:      # transformers' own download into the HF cache, with progress bars
                    model = UperNetForSemanticSegmentation.from_pretrained(self.model_ref)
                except (OSError, ValueError) as e2:
                    raise SegmenterError(offline_message(
                        self.model_ref, str(e2).splitlines()[0][:200])) from None
            if model.config.num_labels != 150:
                raise SegmenterError(
                    f"ADE20K segmenter: {self.model_ref} predicts {model.config.num_labels} "
                    "classes, not ADE20K's 150; use an openmmlab/upernet-convnext-* model")
            self._model = model.eval().to(self.device)
        return self._model

    def release(self) -> None:
        """Drop the loaded model (it is loaded again on the next `segment` call)."""
        self._model = None

    def concepts(self) -> list[tuple[str, str]]:
        """The 150 ADE20K classes, category "object"; id = model label + 1."""
        return [(n, "object") for n in ade20k_classes()]

    @torch.no_grad()
    def segment(self, images: np.ndarray, mask_size: tuple[int, int],
                paths: Sequence[str] | None = None) -> list[Segmentation]:
        """Argmax class per pixel at `mask_size` (logits resized bilinearly); ids = label + 1."""
        images = check_images(images)
        model = self.load()
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        out: list[Segmentation] = []
        for s in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[s:s + self.batch_size]).permute(0, 3, 1, 2).float() / 255
            if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
                x = torch.nn.functional.interpolate(
                    x, size=(self.input_size, self.input_size), mode="bilinear",
                    align_corners=False, antialias=True)
            logits = model(pixel_values=((x - mean) / std).to(self.device)).logits
            logits = torch.nn.functional.interpolate(logits.float(), size=tuple(mask_size),
                                                     mode="bilinear", align_corners=False)
            labels = logits.argmax(1).to(torch.int32).cpu().numpy() + 1
            out += [Segmentation(pixel={"object": lab[None]}) for lab in labels]
        return out
