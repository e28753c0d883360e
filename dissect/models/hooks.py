"""Hooks that own their lifetime: capture or edit a module's output inside a `with` block.

    with capture(model, ["layer3", "layer4"]) as acts:
        model(x)
    acts["layer4"]            # a copy of layer4's output (B×K×h×w)
    acts["blocks.11"]         # a ViT block's B×N×C tokens read as a B×C×14×14 map

Outputs are read and edited through dissect.models.layout with the layout set on the model
(`layout.set_layout`, default auto): token (B×N×C) and channels-last (B×H×W×C) layers are seen
as B×C×h×w maps, and an edit's map is written back in the layer's own layout.

    with intervene(model, {"layer4": lambda out: out * mask}):
        logits = model(x)     # layer4's output is replaced by the edit's return value

No hook outlives its block, even when the forward pass raises.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from dissect.errors import LayerNotFound
from dissect.models.layout import capture_map, edit_in_layout


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` (as `named_modules` spells it), or LayerNotFound."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise LayerNotFound(name, model) from None


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def capture(
    model: nn.Module, layers: Sequence[str], *, stop_after: bool = False, raw: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record a copy of each layer's output into the yielded dict, keyed by layer name.

    Outputs are cloned (detached) so an in-place op after the layer cannot rewrite them, and
    read as B×C×h×w maps (dissect.models.layout) when the layer gives tokens or channels-last maps.
    With `stop_after=True` the forward pass is cut short after the last of `layers` has
    run (raise-and-catch, as baukit's `stop=True`): wrap the call in `stopped_forward`.
    `raw=True` keeps each output as the layer gave it (tokens stay B×N×C).
    """
    modules = [(name, get_layer(model, name)) for name in layers]
    outputs: dict[str, torch.Tensor] = {}
    seen_this_pass: set[str] = set()
    handles = []

    def new_pass(_module, _inputs):
        seen_this_pass.clear()

    def make_hook(name: str):
        def hook(module, _inputs, output):
            out = _first_tensor(output)
            outputs[name] = out.detach().clone() if raw else capture_map(out, model, module, name)
            seen_this_pass.add(name)
            if stop_after and len(seen_this_pass) == len(modules):
                raise StopForward()
        return hook

    try:
        handles.append(model.register_forward_pre_hook(new_pass))
        for name, module in modules:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield outputs
    finally:
        for handle in reversed(handles):
            handle.remove()


class StopForward(Exception):
    """Raised by a capture hook to end a forward pass early."""


def stopped_forward(model: nn.Module, x: torch.Tensor) -> None:
    """Run `model(x)` inside `capture(..., stop_after=True)`, swallowing the early stop."""
    try:
        model(x)
    except StopForward:
        pass


Edit = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def intervene(model: nn.Module, edits: Mapping[str, Edit]) -> Iterator[None]:
    """Replace each named layer's output with `edit(output)` while the block runs.

    The edit sees the output as a B×C×h×w map when the layer gives tokens or channels-last
    maps (dissect.models.layout); its result is written back in the layer's layout, prefix tokens
    (class, register) untouched unless the model's layout says include_prefix."""
    modules = [(name, get_layer(model, name), edit) for name, edit in edits.items()]
    handles = []

    def make_hook(edit: Edit, name: str):
        def hook(module, _inputs, output):
            if isinstance(output, tuple):
                return (edit_in_layout(edit, output[0], model, module, name),) + output[1:]
            return edit_in_layout(edit, output, model, module, name)
        return hook

    try:
        for name, module, edit in modules:
            handles.append(module.register_forward_hook(make_hook(edit, name)))
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()
