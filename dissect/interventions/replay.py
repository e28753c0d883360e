"""Re-run a model from a layer on, reusing everything computed before it.

    rp = Replay(model, ["layer4"])
    before = rp.record(x)                           # one full forward; caches the prefix
    with intervene(model, {"layer4": edit}):
        after = rp.run()                            # only what comes after layer4 is computed

How: `record` hooks every module and notes the order in which calls start and end. The modules
whose calls end before the first of `layers` starts (the largest such, e.g. conv1 … layer3 of a
ResNet) get their outputs cached; `run` temporarily swaps their `forward` for one that returns the
cached output, so their compute is skipped, while the split layer returns its recorded raw
output (edits then apply through its forward hooks as usual). Functional code between modules
still runs, so any architecture whose control flow depends only on its input works (ResNet,
VGG, EfficientNet, the ToyWorld CNN). `record` checks one replay against the recorded output and
falls back to a plain forward when replay would not be exact. Call `record` outside any edit;
edits must return new tensors (never modify their input in place).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from dissect.models.hooks import get_layer


@dataclass
class _Call:
    module: nn.Module
    parent: "_Call | None"
    start: int
    end: int = -1
    output: Any = None             # a detached clone, kept while the call may be maximal
    source: Any = None             # the original output object (to detect in-place edits)
    versions: tuple = ()
    mutated: bool = False
    children: list = field(default_factory=list)


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _poison(obj):
    """A zero-memory NaN stand-in for a cached output that nothing should read."""
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return torch.full((), float("nan"), dtype=obj.dtype, device=obj.device).expand(obj.shape)
    if isinstance(obj, tuple):
        return tuple(_poison(o) for o in obj)
    return obj


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_clone(o) for o in obj)
    if isinstance(obj, list):
        return [_clone(o) for o in obj]
    return obj


class Replay:
    """Cache a model's prefix (everything before the first of `layers`) and re-run the rest."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.model = model
        self.layers = list(layers)
        for name in self.layers:
            get_layer(model, name)
        # split only at layers with no other edited layer inside them (an edit inside the split
        # layer would be skipped); an enclosing layer still runs, so its edit applies
        leafmost = [n for n in self.layers
                    if not any(o != n and o.startswith(n + ".") for o in self.layers)]
        self.targets = {get_layer(model, name): name for name in leafmost}
        self.split: str | None = None
        self.input: Any = None
        self.output: torch.Tensor | None = None
        self._cached: dict[nn.Module, list] = {}
        self.exact = True            # False: replay disagreed with the model; run() is a plain forward
        self._unused: set[nn.Module] | None = None   # prefix modules whose output nothing reads

    @torch.no_grad()
    def record(self, x: torch.Tensor) -> torch.Tensor:
        """One plain forward of `x` that caches the prefix; returns the model's output."""
        calls: list[_Call] = []
        stack: list[_Call] = []
        counter = itertools.count()
        split_start: list[int] = []

        def pre(module, _inputs):
            call = _Call(module, stack[-1] if stack else None, next(counter))
            if module in self.targets and not split_start:
                split_start.append(call.start)
                self.split = self.targets[module]
            calls.append(call)
            stack.append(call)

        def post(module, _inputs, output):
            call = stack.pop()
            call.end = next(counter)
            if not split_start and self._unused is not None and module in self._unused:
                call.output, call.source = _poison(output), output
            elif not split_start or (module in self.targets and self.targets[module] == self.split
                                     and call.start == split_start[0]):
                call.output, call.source = _clone(output), output
                call.versions = tuple(t._version for t in _tensors(output))
                for child in call.children:      # a finished parent supersedes its children
                    child.output = child.source = None
            if call.parent is not None:
                call.parent.children.append(call)

        handles = []
        try:
            for _name, module in self.model.named_modules():
                if module is self.model:
                    continue
                handles.append(module.register_forward_pre_hook(pre))
                handles.append(module.register_forward_hook(post))
            out = self.model(x)
        finally:
            for h in reversed(handles):
                h.remove()
        if not split_start:
            raise RuntimeError(f"none of the layers {self.layers} ran in the forward pass")
        start = split_start[0]
        cached: dict[nn.Module, list] = {}
        for call in calls:
            before = call.end != -1 and call.end < start
            maximal = before and (call.parent is None or not (call.parent.end < start))
            is_split = call.start == start
            if (maximal or is_split) and call.output is not None:
                call.mutated = is_split or \
                    tuple(t._version for t in _tensors(call.source)) != call.versions
                cached.setdefault(call.module, []).append((call.output, call.mutated))
            call.source = None
        self._cached, self.input, self.output = cached, x, out.detach()
        self.exact = True
        if self._unused is None:
            self._prune()
        if not self._matches():            # replay without edits must reproduce the output
            self.exact = False
            self._cached = {}
        return self.output

    def _matches(self) -> bool:
        try:
            check = self._replay()
        except RuntimeError:
            return False
        return self.exact and torch.allclose(check, self.output, rtol=1e-4, atol=1e-5)

    def _prune(self) -> None:
        """Find the cached prefix outputs that nothing reads (e.g. conv1 … layer2 of a ResNet
        whose split is layer4): replace them by NaN stand-ins and check the output is unchanged."""
        split_module = get_layer(self.model, self.split)
        candidates = [m for m in self._cached if m is not split_module]
        saved = {m: list(v) for m, v in self._cached.items()}

        def poisoned(mods) -> bool:
            for m in mods:
                self._cached[m] = [(_poison(v), False) for v, _mut in saved[m]]
            ok = self._matches()
            self.exact = True
            for m in mods:
                self._cached[m] = list(saved[m])
            return ok

        if poisoned(candidates):
            unused = set(candidates)
        else:
            unused = {m for m in candidates if poisoned([m])}
        self._unused = unused
        for m in unused:
            self._cached[m] = [(_poison(v), False) for v, _mut in saved[m]]

    @torch.no_grad()
    def run(self) -> torch.Tensor:
        """The model's output on the recorded input, computing only what follows the split layer.

        Edits (hooks.intervene on any layer at or after the split) apply as in a plain forward.
        """
        if self.input is None:
            raise RuntimeError("Replay.run() before record()")
        if not self.exact:
            return self.model(self.input)
        return self._replay()

    def _replay(self) -> torch.Tensor:
        saved = []
        try:
            for module, outputs in self._cached.items():
                queue = list(outputs)
                original = module.__dict__.get("forward")

                def forward(*args, _queue=queue, _module=module, _orig=original, **kwargs):
                    if _queue:
                        value, mutated = _queue.pop(0)
                        return _clone(value) if mutated else value
                    real = _orig if _orig is not None else type(_module).forward.__get__(_module)
                    return real(*args, **kwargs)

                saved.append((module, original))
                module.forward = forward
            versions = [(t, t._version) for outs in self._cached.values()
                        for value, _m in outs for t in _tensors(value)]
            out = self.model(self.input)
        finally:
            for module, original in saved:
                if original is None:
                    del module.forward
                else:
                    module.forward = original
        if any(t._version != v for t, v in versions if t.dim() == 0 or t.stride() != (0,) * t.dim()):   # something edited the cache in place
            self.exact = False
            for outs in self._cached.values():
                outs.clear()
        return out
