"""A layer's dictionary: decoder rows (feature directions), the encoder, save and load.

    basis = Basis.load("runs/toy/layers/conv6@sae512")     # basis.safetensors + basis.json
    z = basis.encode(x)            # x float32 [N, C] positions -> codes [N, K]
    x_hat = basis.decode(z)        # sum_k z_k * decoder[k] + decoder_bias
    zmap = basis.encode_maps(a)    # a [B, C, h, w] -> [B, K, h, w]

Encoders (one torch implementation, used by the dissection and by ablation alike):
- pca: z = (x - mean) @ decoder.T (orthonormal rows; the sign convention is in fit.py);
- nmf: z = argmin_{z >= 0} ||x - z @ decoder||^2, by HALS coordinate descent from a clipped
  least-squares start (NMF_SWEEPS sweeps; deterministic);
- sae: z = TopK(ReLU((x - decoder_bias) @ encoder + encoder_bias)), the `topk` largest kept.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

METHODS = ("pca", "nmf", "sae")
NMF_SWEEPS = 40


@dataclass(eq=False)
class Basis:
    """Feature directions of a layer and how to compute each position's codes."""
    method: str
    decoder: torch.Tensor                 # float32 [K, C]
    decoder_bias: torch.Tensor            # float32 [C]
    encoder: torch.Tensor | None = None   # sae: float32 [C, K]
    encoder_bias: torch.Tensor | None = None   # sae: float32 [K]
    topk: int = 0                         # sae: codes kept per position (0: all)
    info: dict = field(default_factory=dict)   # basis.json

    @property
    def k(self) -> int:
        return int(self.decoder.shape[0])

    @property
    def channels(self) -> int:
        return int(self.decoder.shape[1])

    def to(self, device: str | torch.device) -> "Basis":
        """This basis with its tensors on `device` (a new object)."""
        mv = lambda t: None if t is None else t.to(device)
        return Basis(self.method, mv(self.decoder), mv(self.decoder_bias), mv(self.encoder),
                     mv(self.encoder_bias), self.topk, dict(self.info))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [N, K] of positions x [N, C] (float32)."""
        x = x.float()
        D = self.decoder.to(x.device)
        if self.method == "pca":
            return (x - self.decoder_bias.to(x.device)) @ D.T
        if self.method == "nmf":
            return nnls_codes(x - self.decoder_bias.to(x.device), D)
        pre = (x - self.decoder_bias.to(x.device)) @ self.encoder.to(x.device) \
            + self.encoder_bias.to(x.device)
        return topk_relu(pre, self.topk)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat [N, C] = z @ decoder + decoder_bias."""
        return z @ self.decoder.to(z.device) + self.decoder_bias.to(z.device)

    def encode_maps(self, a: torch.Tensor) -> torch.Tensor:
        """Code maps [B, K, h, w] of a layer output a [B, C, h, w]."""
        b, c, h, w = a.shape
        z = self.encode(a.permute(0, 2, 3, 1).reshape(-1, c))
        return z.reshape(b, h, w, self.k).permute(0, 3, 1, 2).contiguous()

    # -- files
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"decoder": self.decoder.float().contiguous().cpu(),
               "decoder_bias": self.decoder_bias.float().contiguous().cpu()}
        if self.encoder is not None:
            out["encoder"] = self.encoder.float().contiguous().cpu()
            out["encoder_bias"] = self.encoder_bias.float().contiguous().cpu()
        return out

    def save(self, folder: str | Path) -> None:
        """Write basis.safetensors and basis.json into `folder` (each atomically)."""
        from safetensors.torch import save
        from dissect.runs.atomic import write_bytes, write_json
        folder = Path(folder)
        write_bytes(folder / "basis.safetensors",
                    save(self.tensors(), metadata={"method": self.method, "topk": str(self.topk)}))
        write_json(folder / "basis.json", {**self.info, "method": self.method, "k": self.k,
                                           "topk": self.topk})

    @classmethod
    def load(cls, folder: str | Path) -> "Basis":
        """The basis saved in a feature layer's folder; FeatureError when it is missing/bad."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from dissect.errors import FeatureError
        folder = Path(folder)
        try:
            t = load_file(str(folder / "basis.safetensors"))
            info = json.loads((folder / "basis.json").read_text())
            method = info["method"]
        except (OSError, SafetensorError, ValueError, KeyError) as e:
            raise FeatureError(f"{folder} holds no readable basis ({type(e).__name__}: {e}); "
                               "run `python -m dissect features RUN --layer L ... --overwrite` "
                               "to fit it again") from None
        return cls(method, t["decoder"], t["decoder_bias"], t.get("encoder"),
                   t.get("encoder_bias"), int(info.get("topk") or 0), info)


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU(pre) with all but the k largest entries of each row set to 0 (k=0: plain ReLU)."""
    z = torch.relu(pre)
    if 0 < k < z.shape[1]:
        vals, idx = z.topk(k, dim=1)
        z = torch.zeros_like(z).scatter_(1, idx, vals)
    return z


def nnls_codes(x: torch.Tensor, D: torch.Tensor, sweeps: int = NMF_SWEEPS) -> torch.Tensor:
    """argmin_{z >= 0} ||x - z @ D||^2 per row (HALS coordinate descent, `sweeps` passes)."""
    G = D @ D.T                                           # [K, K]
    B = x @ D.T                                           # [N, K]
    z = torch.relu(B @ torch.linalg.pinv(G))
    diag = G.diagonal().clamp_min(1e-12)
    for _ in range(sweeps):
        for k in range(D.shape[0]):
            z[:, k] = torch.clamp_min(z[:, k] + (B[:, k] - z @ G[:, k]) / diag[k], 0)
    return z
