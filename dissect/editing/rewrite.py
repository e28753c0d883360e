"""Rank-one rewriting of a conv or linear layer (ROME / Santurkar et al. 2021 for CNNs).

    target = edit_target(lm.model, "conv5")         # the Conv2d inside block conv5 (or a Linear)
    mom = second_moment(lm, target, batches)        # C = E[k kᵀ] over a probe set (mergeable)
    keys, values = keys_values(lm, target, x_style, x_orig, masks)   # k = input on the restyled
                                                    # concept, v = output on the original
    upd = rank_one_update(W, keys, values, mom.matrix(), rank=1)    # ΔW = Λ Dᵀ, D ∝ C⁻¹k*
    with edited(lm.model, target, upd.delta):       # weights restored on exit
        ...

A k×k convolution is linear in its unfolded input patch (Cin·k·k numbers), so keys are
unfolded patches and W is the conv weight viewed as Cout × (Cin·k·k): the closed form is exact
for convs and linear layers alike. With one key, (W + ΔW) k* = v*, rank(ΔW) = 1, and any key
with Dᵀk = 0 is left unchanged. With many keys (every cell of the concept in every exemplar),
D spans the top right-singular directions of the whitened keys (Bau et al. 2020) and Λ is the
least-squares fit of the values. MEMIT (`memit_update`): ΔW = R Kᵀ (λC + K Kᵀ)⁻¹.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dissect.errors import RewriteError
from dissect.models.hooks import get_layer


@dataclass
class Target:
    """The module whose weight is rewritten, and how its input becomes keys."""
    name: str                 # e.g. "conv5.0"
    module: nn.Module         # Conv2d or Linear

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight"

    def flat_weight(self) -> torch.Tensor:
        w = self.module.weight.detach()
        return w.reshape(w.shape[0], -1)

    def keys_of(self, inp: torch.Tensor) -> torch.Tensor:
        """Layer input -> keys: B×D×L (unfolded patches for a conv; for a linear, B×D×1 on a
        flat input and B×D×N when it is applied at every token or position, B×N×D / B×H×W×D)."""
        m = self.module
        if isinstance(m, nn.Linear):
            if inp.dim() == 2:
                return inp[:, :, None]
            return inp.reshape(inp.shape[0], -1, inp.shape[-1]).transpose(1, 2)
        return F.unfold(inp, m.kernel_size, dilation=m.dilation, padding=m.padding,
                        stride=m.stride)


def edit_target(model: nn.Module, layer: str) -> Target:
    """The Conv2d / Linear called `layer`, or the first one directly inside a block `layer`."""
    mod = get_layer(model, layer)
    if isinstance(mod, (nn.Conv2d, nn.Linear)):
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            raise RewriteError(f"layer '{layer}' is a grouped conv (groups={mod.groups}); choose "
                               "an ordinary conv or linear layer")
        return Target(layer, mod)
    for name, child in mod.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            return edit_target(model, f"{layer}.{name}")
        break
    hint = _enclosing_block(model, layer) or _last_linear(mod, layer) or \
        "a conv block such as conv5"
    raise RewriteError(f"layer '{layer}' is a {type(mod).__name__}, not a conv or linear layer "
                       f"(or a block that starts with one); choose e.g. {hint} "
                       "(list them with: python -m dissect layers --model M)")


def _last_linear(block: nn.Module, layer: str) -> str | None:
    """`layer.sub` naming the block's last linear layer (a transformer block's MLP output,
    where ROME edits), or None."""
    names = [n for n, m in block.named_modules() if n and isinstance(m, nn.Linear)]
    return f"{layer}.{names[-1]}, the block's last linear layer" if names else None


def _enclosing_block(model: nn.Module, layer: str) -> str | None:
    """The innermost block around `layer` whose first child is a conv / linear layer (so
    `rewrite --layer conv6.2`, the ReLU inside block conv6, suggests conv6), or None."""
    parts = layer.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            block = get_layer(model, name)
        except Exception:   # noqa: BLE001 (any lookup failure: no such block)
            continue
        first = next(iter(block.children()), None)
        if isinstance(first, (nn.Conv2d, nn.Linear)):
            return f"the enclosing block {name}"
    return None


def layer_io(model: nn.Module, target: Target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of the target module on normalised input x (copies)."""
    got = {}

    def hook(_m, inputs, output):
        got["in"] = inputs[0].detach().clone()
        got["out"] = output.detach().clone()
    h = target.module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return got["in"], got["out"]


# ---- second moment -----------------------------------------------------------------------------

class SecondMoment:
    """C = E[k kᵀ] over keys, streamed: add(keys D×n), merge, state_dict / load_state_dict."""

    def __init__(self, dim: int | None = None):
        self.sum = None if dim is None else torch.zeros(dim, dim, dtype=torch.float64)
        self.count = 0

    def add(self, keys: torch.Tensor) -> None:
        k = keys.detach().to(torch.float64 if keys.device.type == "cpu" else torch.float32)
        s = (k @ k.T).double().cpu()
        self.sum = s if self.sum is None else self.sum + s
        self.count += k.shape[1]

    def merge(self, other: "SecondMoment") -> "SecondMoment":
        if other.sum is not None:
            self.sum = other.sum.clone() if self.sum is None else self.sum + other.sum
            self.count += other.count
        return self

    def matrix(self) -> torch.Tensor:
        if self.sum is None or self.count == 0:
            raise RewriteError("no keys to estimate the second moment over; give a probe set")
        return (self.sum / self.count).float()

    def state_dict(self) -> dict:
        return {"sum": self.sum, "count": torch.tensor(self.count)}

    def load_state_dict(self, state: dict) -> "SecondMoment":
        self.sum, self.count = state["sum"].double(), int(state["count"])
        return self


@torch.no_grad()
def second_moment(lm, target: Target, batches: Iterable[torch.Tensor],
                  stride_keys: int = 1) -> SecondMoment:
    """C over every position of every images01 batch (B×3×H×W in [0, 1])."""
    mom = SecondMoment()
    from dissect.models.hooks import StopForward

    def hook(_m, inputs, _out):
        k = target.keys_of(inputs[0])               # B×D×L
        k = k[:, :, ::stride_keys] if stride_keys > 1 else k
        mom.add(k.permute(1, 0, 2).reshape(k.shape[1], -1))
        raise StopForward()
    h = target.module.register_forward_hook(hook)
    try:
        for x in batches:
            try:
                lm.model(lm.normalize(x.to(lm.device)))
            except StopForward:
                pass
    finally:
        h.remove()
    return mom


def regularised(C: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """C + eps·mean(diag C)·I: positive definite, invertible."""
    d = C.shape[0]
    return C + eps * C.diagonal().mean().clamp_min(1e-12) * torch.eye(d, dtype=C.dtype)


# ---- keys and values -----------------------------------------------------------------------------

def cell_mask(masks: torch.Tensor, shape: tuple[int, int], min_cover: float = 0.5) -> torch.Tensor:
    """B×H×W pixel masks -> B×L bool: output cells the concept covers by at least `min_cover`."""
    cover = F.adaptive_avg_pool2d(masks[:, None].float(), shape)[:, 0]
    return (cover >= min_cover).reshape(len(masks), -1)


def token_cell_mask(masks: torch.Tensor, out: torch.Tensor, model: nn.Module,
                    min_cover: float = 0.5) -> torch.Tensor:
    """B×N bool for a linear layer's B×N×C (tokens) or B×H×W×C output: the patch tokens the
    concept covers; class and register tokens are never keys (dissect.models.layout's grid)."""
    from dissect.models.layout import resolve
    if out.dim() == 4:
        return cell_mask(masks, tuple(out.shape[1:3]), min_cover)
    r = resolve(out, model)
    cells = cell_mask(masks, r.grid, min_cover)
    return torch.cat([torch.zeros(len(cells), r.prefix, dtype=torch.bool), cells], 1)


@torch.no_grad()
def keys_values(lm, target: Target, x_style: torch.Tensor, x_orig: torch.Tensor,
                masks: torch.Tensor, min_cover: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys D×n (input on the restyled images) and values Cout×n (output on the originals),
    one column per cell of the layer's output that the concept covers, over all exemplars."""
    k_in, out_s = layer_io(lm.model, target, lm.normalize(x_style.to(lm.device)))
    _, out_o = layer_io(lm.model, target, lm.normalize(x_orig.to(lm.device)))
    keys = target.keys_of(k_in)                                  # B×D×L
    if isinstance(target.module, nn.Conv2d):
        sel = cell_mask(masks, out_o.shape[-2:], min_cover)      # B×L
        vals = out_o.flatten(2)                                  # B×Cout×L
    elif out_o.dim() == 2:
        sel = masks.reshape(len(masks), -1).any(1, keepdim=True)
        vals = out_o[:, :, None]
    else:                                                        # a linear at every token
        sel = token_cell_mask(masks, out_o, lm.model, min_cover)
        vals = out_o.reshape(len(out_o), -1, out_o.shape[-1]).transpose(1, 2)
    sel = sel.to(keys.device)
    if target.module.bias is not None:
        vals = vals - target.module.bias[None, :, None]
    if not sel.any():
        raise RewriteError("the concept covers no cell of the layer's output in the exemplars; "
                           "choose exemplars where it is larger, or an earlier layer")
    b, l = torch.nonzero(sel, as_tuple=True)
    return keys[b, :, l].T.contiguous().float(), vals[b, :, l].T.contiguous().float()


# ---- updates -------------------------------------------------------------------------------------

@dataclass
class Update:
    delta: torch.Tensor        # ΔW, shaped like the flat weight (Cout × D)
    directions: torch.Tensor   # D×r: the update's row space (∝ C⁻¹k* for rank 1)
    fit_before: float          # mean squared error of W k vs v over the keys
    fit_after: float

    @property
    def rank(self) -> int:
        return int(torch.linalg.matrix_rank(self.delta.float()).item())   # float32 tolerance


def rank_one_update(W: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, C: torch.Tensor,
                    rank: int = 1) -> Update:
    """ΔW = Λ Dᵀ with D ∝ C⁻¹k* (the top-`rank` whitened key directions), Λ the least squares
    fit of `values` (Cout×n) from `keys` (D×n); exact for a single key."""
    W, K, V = W.double().cpu(), keys.double().cpu(), values.double().cpu()   # solved on the CPU
    Cr = regularised(C.double().cpu())
    evals, evecs = torch.linalg.eigh(Cr)
    inv_sqrt = evecs @ torch.diag(evals.clamp_min(1e-12).rsqrt()) @ evecs.T   # C^-1/2 (ZCA)
    Z = inv_sqrt @ K                                          # whitened keys
    u, _s, _vt = torch.linalg.svd(Z, full_matrices=False)
    q = u[:, :max(1, min(rank, K.shape[1]))]
    D = inv_sqrt @ q                                          # D = C^-1/2 q  (∝ C⁻¹k* for one key)
    D = D * torch.sign((D.T @ K).sum(1, keepdim=True).T + 1e-30)
    R = V - W @ K                                             # residuals
    P = D.T @ K                                               # r×n
    Lam = R @ P.T @ torch.linalg.pinv(P @ P.T)                # Cout×r
    delta = Lam @ D.T
    before = float((R ** 2).mean())
    after = float(((R - delta @ K) ** 2).mean())
    return Update(delta.float(), D.float(), before, after)


def memit_update(W: torch.Tensor, keys: torch.Tensor, residuals: torch.Tensor, C: torch.Tensor,
                 lam: float) -> torch.Tensor:
    """MEMIT's ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ for keys D×n and residuals Cout×n."""
    K, R = keys.double().cpu(), residuals.double().cpu()
    A = lam * regularised(C.double().cpu()) + K @ K.T
    return torch.linalg.solve(A, (R @ K.T).T).T.float()


@contextmanager
def edited(model: nn.Module, target: Target, delta: torch.Tensor) -> Iterator[None]:
    """The target's weight += ΔW inside the block, restored exactly on exit (even on error)."""
    w = target.module.weight
    old = w.detach().clone()
    try:
        with torch.no_grad():
            w.add_(delta.reshape(w.shape).to(w.device, w.dtype))
        yield
    finally:
        with torch.no_grad():
            w.copy_(old)


def apply_delta(target: Target, delta: torch.Tensor) -> None:
    """Add ΔW to the target's weight for good (the caller owns the model copy)."""
    with torch.no_grad():
        w = target.module.weight
        w.add_(delta.reshape(w.shape).to(w.device, w.dtype))


# ---- fine-tuning baseline ------------------------------------------------------------------------

def finetune_local(lm, target: Target, x_style: torch.Tensor, labels: torch.Tensor,
                   steps: int = 400, lr: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """Santurkar et al.'s `finetune_local`: train only the target's weight with cross-entropy on
    the restyled exemplars; returns ΔW (the model is left as it was)."""
    torch.manual_seed(seed)
    w = target.module.weight
    old = w.detach().clone()
    params = [p for p in lm.model.parameters()]
    flags = [p.requires_grad for p in params]
    x = lm.normalize(x_style.to(lm.device))
    y = labels.to(lm.device)
    try:
        for p in params:
            p.requires_grad_(False)
        w.requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                loss = F.cross_entropy(lm.model(x), y)
                loss.backward()
                opt.step()
        delta = (w.detach() - old).reshape(old.shape[0], -1).clone()
    finally:
        with torch.no_grad():
            w.copy_(old)
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        w.grad = None
    return delta


__all__ = ["Target", "edit_target", "SecondMoment", "second_moment", "keys_values",
           "rank_one_update", "memit_update", "edited", "apply_delta", "finetune_local",
           "RewriteError", "cell_mask", "layer_io", "regularised"]
