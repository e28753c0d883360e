"""Edit dictionary features inside a forward pass (the ablation of a feature layer).

    basis = Basis.load(run.layer_dir("conv6@sae512"))
    iv = FeatureIntervention("conv6", basis, (3, 17), mode="zero")
    with ablate(lm.model, [iv]):                  # dissect.interventions.ablation.ablate: any intervention
        logits = lm.model(lm.normalize(x))

At every position of the module's output x, the codes z = encode(x) of the chosen features are
set (zero, mean, value=X, scale=X) to z', and x is written back as
x + sum_k (z'_k - z_k) * decoder[k]: the part of x the dictionary does not reconstruct stays.
With no features chosen the output is returned unchanged (bit for bit).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dissect.interventions.ablation import MODES
from dissect.features.basis import Basis
from dissect.features.layer import parse_feature_layer
from dissect.errors import AblationError


@dataclass(eq=False)
class FeatureIntervention:
    """Set `units` (features of `basis`) at module `layer`'s output; same modes as units."""
    layer: str                                  # the module (the basis's layer), e.g. conv6
    basis: Basis
    units: tuple[int, ...]
    mode: str = "zero"
    value: float = 0.0
    means: torch.Tensor | None = None           # [K] mean code per feature, for mode "mean"
    name: str = ""                              # the feature layer, e.g. conv6@sae512

    def __post_init__(self):
        self.units = tuple(int(u) for u in self.units)
        if self.mode not in MODES:
            raise AblationError(f"unknown mode '{self.mode}': use zero, mean, value=X or scale=X")
        bad = [u for u in self.units if not 0 <= u < self.basis.k]
        if bad:
            raise AblationError(f"feature {bad[0]} is out of range for '{self.name or self.layer}':"
                                f" it has {self.basis.k} features, numbered 0-{self.basis.k - 1}")
        if self.mode == "mean" and self.means is None:
            raise AblationError("mode 'mean' needs the features' mean codes: pass --run RUN "
                                "whose feature layer kept acts.npy")

    def apply(self, out: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """out + sum over chosen k of (z'_k - z_k) * decoder[k] (a new tensor). `codes`: the
        code maps [B, K, h, w] of `out` when the caller computed them already (a ranking that
        edits the same output once per feature encodes it once)."""
        if not self.units:
            return out.clone()
        if out.dim() != 4 or out.shape[1] != self.basis.channels:
            raise AblationError(f"'{self.name}' is a basis of {self.basis.channels} channels, but "
                                f"layer '{self.layer}' gives {list(out.shape[1:])}; refit it")
        idx = torch.as_tensor(self.units, dtype=torch.long, device=out.device)
        if codes is None:
            codes = self.basis.to(out.device).encode_maps(out.float())
        z = codes.to(out.device)[:, idx]                                      # [B, S, h, w]
        if self.mode == "zero":
            new = torch.zeros_like(z)
        elif self.mode == "value":
            new = torch.full_like(z, self.value)
        elif self.mode == "scale":
            new = z * self.value
        else:
            new = self.means.to(out.device, z.dtype)[idx].view(1, -1, 1, 1).expand_as(z)
        D = self.basis.decoder.to(out.device, z.dtype)[idx]                  # [S, C]
        delta = torch.einsum("bshw,sc->bchw", new - z, D)
        return (out.float() + delta).to(out.dtype)

    def describe(self) -> str:
        how = {"zero": "zeroed", "mean": "set to their mean", "value": f"set to {self.value:g}",
               "scale": f"scaled by {self.value:g}"}[self.mode]
        return f"{self.name or self.layer}: {len(self.units)} feature(s) {how}"


def feature_intervention(run, name: str, units, mode: str = "zero", value: float = 0.0,
                         invert: bool = False) -> FeatureIntervention:
    """The intervention on features `units` of feature layer `name` of `run` (a Run)."""
    parsed = parse_feature_layer(name)
    if parsed is None:
        raise AblationError(f"'{name}' is not a feature layer (LAYER@<method><K>)")
    if run is None:
        raise AblationError(f"--layer {name} is a feature layer: give --run RUN, the run that "
                            "holds it")
    basis = Basis.load(run.layer_dir(name))
    units = tuple(int(u) for u in units)
    if invert:
        units = tuple(u for u in range(basis.k) if u not in set(units))
    means = None
    if mode == "mean":
        from dissect.interventions.ablation import means_from_run
        means = means_from_run(run, name)
    return FeatureIntervention(parsed[0], basis, units, mode, value, means, name)
