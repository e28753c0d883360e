"""Fit a dictionary (PCA, NMF, TopK SAE) on positions of a layer's activation cache.

    X = sample_positions(acts, rows, max_positions=200_000, seed=0)   # float32 [M, C]
    basis = fit_basis(X, "sae", k=512, topk=8, seed=0)                   # dissect.features.Basis
    stability(basis, fit_basis(X2, "sae", k=512, topk=8, seed=1))       # Hungarian cosine

Every image position (one h×w cell of one image) is one sample. `sample_positions` streams the
memory-mapped cache [images, C, h, w] in chunks and keeps a seeded random subset of at most
`max_positions` positions, so memory does not grow with the probe set.

Choices (each checked by tests/test_dictfeatures.py on planted layers where the truth is known):
- pca: principal directions of the centred sample, K of them. Sign convention: each direction
  is flipped so that its codes have non-negative skewness (third moment) over the sample, so
  a feature's rare, large values (what the top quantile threshold picks) are positive.
- nmf: scikit-learn `NMF(solver="cd", init="custom", max_iter=200, tol=1e-4)` on at most NMF_ROWS
  positions, started from the successive projection algorithm (SPA: K extreme data points, the
  separable-NMF start), one deterministic start, no restarts. Plain NMF is unique only up to
  the cone around the data; SPA starts on the cone's edges, which recovers planted mixing
  directions (6/6 at cosine 1.00 on the mixed-basis test layer), where `nndsvda`, `nndsvd` and
  random starts reach a LOWER reconstruction error with the wrong cone (2-3 of 6 at cosine
  >= 0.85), so choosing among restarts by error would pick the wrong one. Decoder rows are
  scaled to unit norm.
- sae: a TopK sparse autoencoder (own code, after Gao et al. 2024 and `overcomplete`'s
  TopKSAE): inputs scaled to unit mean norm, a learned decoder bias (start 0), decoder rows initialised from random
  data points and kept at unit norm, encoder tied to the decoder at start, Adam with a linear
  warm-up and cosine decay, and dead latents (no firing in RESAMPLE_EVERY steps) re-seeded on
  the worst-reconstructed inputs' residuals during the first 70% of training. Batch 1024,
  lr 5e-3, SAE_STEPS steps; the backward pass runs only through each input's topk latents.
  The command fits two seeds (S, S+1), concurrently when the CPU has cores to spare
  (`fit_seeds`): the one with the lower held-out reconstruction error is kept, and their
  Hungarian match is the stability figure.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from dissect.features.basis import Basis, METHODS, nnls_codes, topk_relu
from dissect.errors import FeatureError

NMF_ROWS = 20_000
RESAMPLE_EVERY = 200
SAE_STEPS = 1500


def sample_positions(acts: np.ndarray, rows: np.ndarray, max_positions: int = 200_000,
                     seed: int = 0, chunk: int = 64) -> np.ndarray:
    """float32 [M, C]: positions of images `rows` of acts [N, C, h, w] (all, or a seeded random
    subset of at most `max_positions`), read in chunks of `chunk` images."""
    rows = np.asarray(rows, dtype=np.int64)
    n, c, h, w = acts.shape
    per = h * w
    total = len(rows) * per
    keep = min(total, max_positions)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, keep, replace=False)) if keep < total else None
    out = np.empty((keep, c), np.float32)
    filled = 0
    for i in range(0, len(rows), chunk):
        r = rows[i:i + chunk]
        x = np.asarray(acts[r], dtype=np.float32).transpose(0, 2, 3, 1).reshape(-1, c)
        if pick is not None:
            lo, hi = i * per, i * per + len(x)
            sel = pick[np.searchsorted(pick, lo):np.searchsorted(pick, hi)] - lo
            x = x[sel]
        out[filled:filled + len(x)] = x
        filled += len(x)
    return out


def fit_basis(X: np.ndarray, method: str, k: int, topk: int = 0, seed: int = 0,
              device: str = "cpu", steps: int = 0) -> Basis:
    """A dictionary of `k` features fitted on positions X [M, C] (see the module docstring)."""
    if method not in METHODS:
        raise FeatureError(f"unknown --method '{method}': use pca, nmf or sae")
    if method == "pca":
        return fit_pca(X, k)
    if method == "nmf":
        return fit_nmf(X, k, seed)
    return fit_sae(X, k, topk, seed, device, steps)


def fit_seeds(X: np.ndarray, method: str, k: int, topk: int, seeds: tuple[int, ...],
              device: str = "cpu", steps: int = 0) -> list[Basis]:
    """One fit of X per seed (for the stability figure). SAE fits are independent and use their
    own generators, so on a CPU with cores to spare they run concurrently, one per thread;
    the bases are the same as fitted one after another."""
    spare = (os.cpu_count() or 1) >= 2 * torch.get_num_threads()
    if method != "sae" or device != "cpu" or not spare or len(seeds) < 2:
        return [fit_basis(X, method, k, topk, s, device, steps) for s in seeds]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(seeds)) as pool:
        return list(pool.map(lambda s: fit_basis(X, method, k, topk, s, device, steps), seeds))


def fit_pca(X: np.ndarray, k: int) -> Basis:
    """The top-k principal directions, each signed so its codes have non-negative skewness."""
    if k > X.shape[1]:
        raise FeatureError(f"--k {k}: PCA has at most as many features as the layer has "
                           f"channels ({X.shape[1]}); use --k {X.shape[1]} or less")
    x = torch.from_numpy(X).double()
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(1, len(x) - 1)
    vals, vecs = torch.linalg.eigh(cov)
    V = vecs[:, vals.argsort(descending=True)[:k]].T.contiguous()   # [k, C]
    z = xc @ V.T
    sign = torch.where((z ** 3).mean(0) < 0, -1.0, 1.0).double()
    V = V * sign[:, None]
    return Basis("pca", V.float(), mean.float())


def _spa(X: np.ndarray, k: int) -> np.ndarray:
    """Successive projection: indices of k rows of X spanning its cone's extreme rays."""
    R = X.astype(np.float64).copy()
    picks = []
    for _ in range(k):
        j = int(np.argmax((R * R).sum(1)))
        picks.append(j)
        u = R[j] / max(np.linalg.norm(R[j]), 1e-12)
        R -= np.outer(R @ u, u)
    return np.array(picks)


def fit_nmf(X: np.ndarray, k: int, seed: int = 0) -> Basis:
    """Non-negative factorisation X ~ W H (sklearn NMF, coordinate descent, SPA or nndsvda start)."""
    import warnings
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning
    lo = float(X.min()) if X.size else 0.0
    if lo < -1e-6:
        raise FeatureError(f"--method nmf needs non-negative activations, but this layer has "
                           f"values down to {lo:.3g}: pick a post-ReLU layer (the output of a "
                           "ReLU or of a block ending in one), or use --method sae or pca")
    X = np.clip(X, 0, None)
    if len(X) > NMF_ROWS:
        X = X[np.random.default_rng(seed).choice(len(X), NMF_ROWS, replace=False)]
    X64 = X.astype(np.float64)
    H0 = X64[_spa(X64, k)] + 1e-6
    W0 = nnls_codes(torch.from_numpy(X64), torch.from_numpy(H0)).numpy() + 1e-6
    model = NMF(n_components=k, solver="cd", init="custom", max_iter=200, tol=1e-4,
                random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit_transform(X64, W=W0, H=H0.copy())
    H = model.components_
    norms = np.linalg.norm(H, axis=1, keepdims=True)
    H = H / np.maximum(norms, 1e-12)
    return Basis("nmf", torch.from_numpy(H).float(), torch.zeros(X.shape[1]))


def fit_sae(X: np.ndarray, k: int, topk: int, seed: int = 0, device: str = "cpu",
            steps: int = 0, batch: int = 1024, lr: float = 5e-3) -> Basis:
    """A TopK SAE with data init, dead-latent resampling and warm-up + cosine learning rate."""
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(X)).float()
    scale = float(x_all.norm(dim=1).mean()) or 1.0
    xs = (x_all / scale).to(device)
    m, c = xs.shape
    batch = min(batch, m)
    steps = steps or SAE_STEPS
    init = xs[torch.randint(m, (k,), generator=gen).to(device)]
    init = init + 0.01 * torch.randn(init.shape, generator=gen).to(device)
    D = torch.nn.Parameter(init / init.norm(dim=1, keepdim=True).clamp_min(1e-8))
    E = torch.nn.Parameter(D.detach().T.clone())
    eb = torch.nn.Parameter(torch.zeros(k, device=device))
    db = torch.nn.Parameter(torch.zeros(c, device=device))
    opt = torch.optim.Adam([D, E, eb, db], lr=lr)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    idle = torch.zeros(k, dtype=torch.long, device=device)
    for step in range(steps):
        xb = xs[torch.randint(m, (batch,), generator=gen).to(device)]
        err, fired = _sae_residual(xb, D, E, eb, db, topk)
        loss = (err ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            D.div_(D.norm(dim=1, keepdim=True).clamp_min(1e-8))
            idle = torch.where(fired, torch.zeros_like(idle), idle + 1)
            if (step + 1) % RESAMPLE_EVERY == 0 and step < 0.7 * steps:
                _resample(idle >= RESAMPLE_EVERY, xb, err, D, E, eb, opt, gen)
    with torch.no_grad():
        return Basis("sae", D.detach().cpu().clone(), db.detach().cpu() * scale,
                     E.detach().cpu().clone(), (eb.detach().cpu() * scale).clone(), topk)


def _sae_residual(xb, D, E, eb, db, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction - xb, which latents fired) for a batch. With 0 < topk < K only the topk
    chosen latents enter the graph: they are picked without gradient on the dense pre-activation,
    then their codes and the reconstruction are computed from gathered rows, so the backward
    pass costs O(batch * topk * C) instead of O(batch * K * C). Same function as
    topk_relu((xb - db) @ E + eb, topk) @ D + db, the dense path used otherwise."""
    xc = xb - db
    k = D.shape[0]
    if not 0 < topk < k:
        z = topk_relu(xc @ E + eb, topk)
        return z @ D + db - xb, (z > 0).any(0)
    with torch.no_grad():
        idx = (xc @ E + eb).topk(topk, dim=1).indices                       # [B, T]
    enc_rows = F.embedding(idx, E.t().contiguous())                        # [B, T, C]
    codes = torch.relu((enc_rows * xc.unsqueeze(1)).sum(-1) + eb[idx])
    recon = (codes.unsqueeze(-1) * F.embedding(idx, D)).sum(1)              # [B, C]
    fired = torch.zeros(k, dtype=torch.bool, device=xb.device)
    fired[idx[codes.detach() > 0]] = True
    return recon + db - xb, fired


def _resample(dead: torch.Tensor, xb, err, D, E, eb, opt, gen) -> None:
    """Re-seed dead latents on the residuals of the worst-reconstructed inputs of the batch."""
    idx = dead.nonzero().flatten()
    if len(idx) == 0:
        return
    w = (err ** 2).sum(1)
    pick = torch.multinomial((w / w.sum()).cpu(), len(idx), replacement=len(idx) > len(w),
                             generator=gen).to(xb.device)
    r = -err[pick]
    r = r / r.norm(dim=1, keepdim=True).clamp_min(1e-8)
    D.data[idx] = r
    E.data[:, idx] = r.T * 0.5
    eb.data[idx] = 0
    for p in (D, E, eb):
        st = opt.state.get(p)
        if not st:
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            if p is E:
                st[key][:, idx] = 0
            else:
                st[key][idx] = 0


def stability(a: Basis, b: Basis) -> float:
    """Mean cosine between the two dictionaries' decoder rows, matched one-to-one (Hungarian);
    for PCA the sign is ignored."""
    cos = match_cosines(a.decoder.numpy(), b.decoder.numpy(), signed=a.method != "pca")
    return float(cos.mean()) if len(cos) else float("nan")


def match_cosines(A: np.ndarray, B: np.ndarray, signed: bool = True) -> np.ndarray:
    """Cosines of the Hungarian one-to-one matching of rows of A [p, C] to rows of B [q, C]
    (min(p, q) values, in A's row order of the matched rows)."""
    from scipy.optimize import linear_sum_assignment
    An = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    Bn = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    cos = An @ Bn.T
    if not signed:
        cos = np.abs(cos)
    r, c = linear_sum_assignment(-cos)
    return cos[r, c]
