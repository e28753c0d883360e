"""A conv chain's exact windowed suffix, used by causal tracing (dissect.editing.tracing).

    chain = ConvChain.of(lm.model)        # None unless stages of (Conv2d, pointwise...) + pool + fc
    with chain.record(lm.model) as acts:  # one corrupted pass, recording what the suffix needs
        lm.model(x_corrupt)
    p = chain.suffix_probs(layer, acts, image, ...)   # p_c per restored cell, on differences
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.Identity)


class ConvChain:
    """A model seen as stages of (Conv2d, pointwise...) ending in global max/avg pool + Linear.

    `ConvChain.of(model)` returns one for the ToyWorld CNN (and any model with the same
    `stages`/`pool`/`fc` layout), else None.

    The suffix is run on differences: restoring one cell of a stage's output changes the next
    conv's input by δ at that cell only, so its pre-activation is the corrupted one plus
    conv(δ) (no bias), which a transposed conv of the δ window computes over exactly the cells
    δ reaches; after the pointwise modules the new δ is the new window minus the corrupted
    one, and so on to the last stage, whose window is pooled together with the corrupted
    map outside it (for max pooling, from prefix/suffix maxima of that map).
    """

    def __init__(self, names: list[str], stages: list[nn.Sequential], pool: str, fc: nn.Linear):
        self.names, self.stages, self.pool, self.fc = names, stages, pool, fc

    @classmethod
    def of(cls, model: nn.Module) -> "ConvChain | None":
        from dissect.toyworld.model import ToyWorldCNN
        if not isinstance(model, ToyWorldCNN):
            return None
        names = [f"conv{i}" for i in range(1, 7)]
        stages = [getattr(model, n) for n in names]
        for st in stages:
            if not isinstance(st[0], nn.Conv2d) or st[0].groups != 1 or \
                    not all(isinstance(m, _POINTWISE) for m in list(st)[1:]):
                return None
        pool = "max" if isinstance(model.pool, nn.AdaptiveMaxPool2d) else "avg"
        return cls(names, stages, pool, model.fc)

    @contextmanager
    def record(self, model: nn.Module) -> Iterator[dict]:
        """Capture, during one forward pass of `model`, every stage's output (keyed by stage
        name) and every stage's conv output before the pointwise modules (under "_z"): the
        `acts_corrupt` that `suffix_probs` takes."""
        acts: dict = {"_z": {}}
        handles = []

        def keep(o, name):
            acts[name] = o.detach().clone()

        def keep_z(o, k):
            acts["_z"][k] = o.detach().clone()
        try:
            for k, (name, st) in enumerate(zip(self.names, self.stages)):
                handles.append(st.register_forward_hook(
                    lambda _m, _i, o, name=name: keep(o, name)))
                handles.append(st[0].register_forward_hook(lambda _m, _i, o, k=k: keep_z(o, k)))
            yield acts
        finally:
            for h in handles:
                h.remove()

    def _pre_activation(self, acts: dict, k: int) -> torch.Tensor:
        z = acts.setdefault("_z", {})
        if k not in z:        # not recorded: recompute the corrupted conv output once
            z[k] = self.stages[k][0](acts[self.names[k - 1]])
        return z[k]

    def _plan(self, cache: dict, acts: dict, k: int) -> dict:
        """Stage k's pieces for the difference pass, once per batch: the transposed conv weight,
        the corrupted pre-activation and output maps as zero-padded channels-last rows, and,
        when the pointwise modules are an eval BatchNorm (folded into the weight and the
        pre-activation) and/or ReLU, no module calls at all."""
        key = ("plan", k)
        if key in cache:
            return cache[key]
        st = self.stages[k]
        conv = st[0]
        pad = 1                          # the widest window at stage k: from a stage-0 cell
        for c in (s[0] for s in self.stages[1:k + 1]):
            pad = (pad - 1 + c.dilation[0] * (c.kernel_size[0] - 1)) // c.stride[0] + 1
        wt = conv.weight.detach().transpose(0, 1).flip(2, 3)      # Cin×Cout×k×k
        z = self._pre_activation(acts, k)
        mods = [m for m in list(st)[1:] if not isinstance(m, nn.Identity)]
        bn = mods[0] if mods and isinstance(mods[0], nn.BatchNorm2d) else None
        rest = mods[1:] if bn is not None else mods
        fused = all(isinstance(m, nn.ReLU) for m in rest) and (
            bn is None or (not bn.training and bn.running_mean is not None))
        if fused and bn is not None:
            scale = (bn.running_var + bn.eps).rsqrt()
            shift = -bn.running_mean * scale
            if bn.affine:
                scale = scale * bn.weight
                shift = shift * bn.weight + bn.bias
            wt = wt * scale[None, :, None, None]
            z = z * scale[:, None, None] + shift[:, None, None]

        # off the map: a pre-activation of -inf makes a fused ReLU give 0 there, the output
        # padding, so no window needs masking (without a ReLU, windows are masked instead)
        ninf = fused and bool(rest)

        def rows(t, value=0.0):
            return F.pad(t, (pad,) * 4, value=value).permute(0, 2, 3, 1).reshape(-1, t.shape[1])
        plan = {"wt": wt.contiguous(), "z": rows(z, float("-inf") if ninf else 0.0),
                "a": rows(acts[self.names[k]]), "pad": pad, "fused": fused, "relu": bool(rest),
                "mods": mods, "masked": ninf}
        cache[key] = plan
        return plan

    def suffix_probs(self, layer: str, acts_corrupt: dict, image: torch.Tensor,
                     cells: torch.Tensor, values: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
        """p(target) for each variant: image b's corrupted run with `layer` cell (i, j) := value.

        image [V] (batch row), cells [V, 2], values [V, C], target [V] (class index);
        acts_corrupt: the corrupted run's stage outputs by name (see `record`). Windows are
        kept channels-last (V×h×w×C) so that the gathers, the transposed convs and the
        pointwise steps all run on contiguous channel rows.
        """
        li = self.names.index(layer)
        V = len(image)
        cache = acts_corrupt.setdefault("_flat", {})
        dev = values.device
        y0, x0 = cells[:, 0].clone(), cells[:, 1].clone()
        src = acts_corrupt[layer]
        values = values.to(src.dtype)
        win = values[:, None, None, :]                         # V×wh×ww×C at (y0, x0)
        old = src[image, :, y0, x0][:, None, None, :]
        valid = None                                            # None: nothing to mask
        last = len(self.stages) - 1
        for k in range(li + 1, last + 1):
            delta = win - old
            if valid is not None:
                delta.mul_(valid)                               # 0 outside the map
            plan = self._plan(cache, acts_corrupt, k)
            conv = self.stages[k][0]
            (kk, _), (s, _), (p, _), (d, _) = conv.kernel_size, conv.stride, conv.padding, \
                conv.dilation
            reach = d * (kk - 1)
            wh, ww = delta.shape[1:3]
            dz = F.conv_transpose2d(delta.permute(0, 3, 1, 2), plan["wt"],
                                    dilation=d).permute(0, 2, 3, 1)   # V×(wh+reach)×(ww+reach)×C
            u0y, u0x = y0 + p - reach, x0 + p - reach           # stride-1 output origin
            y0 = torch.div(u0y + s - 1, s, rounding_mode="floor")   # first real output (ceil)
            x0 = torch.div(u0x + s - 1, s, rounding_mode="floor")
            oh, ow = (wh - 1 + reach) // s + 1, (ww - 1 + reach) // s + 1
            ar_h, ar_w = torch.arange(oh, device=dev), torch.arange(ow, device=dev)
            if s > 1:                                           # keep every s-th, per variant
                dz = F.pad(dz, (0, 0, 0, s - 1, 0, s - 1))
                ty = (y0 * s - u0y)[:, None] + s * ar_h[None]
                tx = (x0 * s - u0x)[:, None] + s * ar_w[None]
                vv = torch.arange(V, device=dev)[:, None, None]
                dz = dz[vv, ty[:, :, None], tx[:, None, :]]     # V×oh×ow×C
            H, W = acts_corrupt[self.names[k]].shape[-2:]
            P = plan["pad"]
            rows, cols = y0[:, None] + ar_h[None], x0[:, None] + ar_w[None]      # V×oh, V×ow
            if plan["masked"]:
                valid = None
            else:
                valid = ((rows >= 0) & (rows < H))[:, :, None, None] & \
                    ((cols >= 0) & (cols < W))[:, None, :, None]              # V×oh×ow×1
            ry = (rows.clamp(-P, H + P - 1) + P)[:, :, None]
            rx = (cols.clamp(-P, W + P - 1) + P)[:, None, :]
            idx = ((image[:, None, None] * (H + 2 * P) + ry) * (W + 2 * P) + rx).view(-1)
            win = plan["z"].index_select(0, idx).view(V, oh, ow, -1)
            win += dz
            if plan["fused"]:
                if plan["relu"]:
                    win.clamp_min_(0)
            else:
                w = win.permute(0, 3, 1, 2)
                for m in plan["mods"]:
                    w = m(w)
                win = w.permute(0, 2, 3, 1).contiguous()
            if k < last or self.pool != "max":
                old = plan["a"].index_select(0, idx).view(V, oh, ow, -1)
        full = acts_corrupt[self.names[last]]                  # the corrupted last map
        H, W = full.shape[-2:]
        wh, ww = win.shape[1:3]
        if self.pool == "max":
            inside = (win.masked_fill_(~valid, float("-inf")) if valid is not None else win)
            pooled = torch.maximum(inside.amax((1, 2)),     # (a ReLU's 0 off the map: ≤ max)
                                   self._max_outside(cache, full, image, y0, x0, wh, ww))
        else:
            mean = cache.get(("mean",))
            if mean is None:
                mean = cache[("mean",)] = full.mean((2, 3))
            change = win - old
            if valid is not None:
                change.mul_(valid)
            pooled = mean[image] + change.sum((1, 2)) / (H * W)
        probs = self.fc(pooled).softmax(1)
        return probs[torch.arange(V, device=dev), target]

    @staticmethod
    def _max_outside(cache: dict, full: torch.Tensor, image: torch.Tensor, y0: torch.Tensor,
                     x0: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
        """V×C: the max of image b's map `full` outside rows [y0, y0+wh) × cols [x0, x0+ww)
        (-inf where the window covers the whole map): the max of the rows above, the rows
        below, and the window's rows left and right of it, from prefix/suffix max tables."""
        H, W = full.shape[-2:]
        key = ("maxout", wh)
        if key not in cache:
            ninf = float("-inf")

            def prefix(t):       # [..., n] -> [..., n+1]: max over the first i (i = 0..n)
                out = torch.full(t.shape[:-1] + (t.shape[-1] + 1,), ninf, dtype=t.dtype,
                                 device=t.device)
                for i in range(t.shape[-1]):
                    torch.maximum(out[..., i], t[..., i], out=out[..., i + 1])
                return out

            def suffix(t):       # [..., n] -> [..., n+1]: max over i.. (i = 0..n)
                return prefix(t.flip(-1)).flip(-1)
            rowmax = full.amax(3)                                           # B×C×H
            above, below = prefix(rowmax), suffix(rowmax)                   # rows < y, ≥ y
            strip = F.pad(full, (0, 0, wh - 1, wh - 1), value=ninf)
            n = H + wh - 1        # strip[r]: max over the rows r-wh+1..r, for r = 0..n-1
            strip = functools.reduce(torch.maximum, [strip[:, :, i:i + n] for i in range(wh)])
            left, right = prefix(strip), suffix(strip)                     # cols < x, ≥ x
            cache[key] = (above, below, left, right)
        above, below, left, right = cache[key]
        ya, yb = y0.clamp(0, H), (y0 + wh).clamp(0, H)
        xa, xb = x0.clamp(0, W), (x0 + ww).clamp(0, W)
        srow = (y0 + wh - 1).clamp(0, H + wh - 2)
        return torch.maximum(torch.maximum(above[image, :, ya], below[image, :, yb]),
                             torch.maximum(left[image, :, srow, xa], right[image, :, srow, xb]))
