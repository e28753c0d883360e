"""p-values below the permutation floor, from the tail of the null draws (Knijnenburg et al. 2009).

    p, method = tail_p(observed, null)       # per unit; method "permutation" | "gpd" | "floor"
    floor_q_warning(units=42, draws=200)     # the line to print when BH cannot reach q ≤ 0.05

With B permutations the plain estimate (1 + M) / (B + 1), M = #{null ≥ observed}, can never go
below 1/(B + 1); Benjamini–Hochberg over K units then gives a lone detector q ≈ K/(B + 1), so at
B = 200 and K = 42 nothing is ever significant. Knijnenburg, Wessels, Reinders and Shmulevich,
"Fewer permutations, more accurate P-values" (Bioinformatics 25, i161, 2009):
- when M ≥ 10 the permutation estimate is good: keep it ("permutation");
- else fit a generalised Pareto distribution (GPD) to the N_exc largest null draws above a
  threshold t halfway between the N_exc-th and (N_exc + 1)-th largest, and estimate
  p = N_exc / B · (1 − F_GPD(observed − t)) ("gpd");
- N_exc starts at min(250, B/4) and drops by 10 until the fit passes an Anderson–Darling
  goodness-of-fit test at 0.05. The critical value of A² for a GPD whose shape and scale are
  estimated depends on the shape (Choulakian & Stephens 2001); AD_CRITICAL is a quadratic in the
  shape fitted to a parametric bootstrap (399 samples of 50 draws per shape from −0.5 to 1 in
  steps of 0.1; `python -m dissect.trust.tail` recomputes the points);
- when no N_exc passes, the floor (1 + M) / (B + 1) is kept ("floor").
An estimate is never larger than the permutation one, and never below MIN_P.
"""
from __future__ import annotations

import numpy as np

MIN_EXCEEDANCES = 10       # M at or above this: the permutation estimate is kept
MAX_TAIL = 250             # the paper's first N_exc
MIN_TAIL = 20              # the smallest tail fitted
GOF_ALPHA = 0.05
GOF_DRAWS = 399            # parametric bootstrap size of the Anderson–Darling null
AD_CRITICAL = (0.266, -0.516, 1.006)   # A² at 0.05 ≈ polyval(AD_CRITICAL, shape), shape in [-.5, 1]
MIN_P = 1e-12


def tail_p(observed: np.ndarray, null: np.ndarray, rtol: float = 1e-5
           ) -> tuple[np.ndarray, np.ndarray]:
    """(p [K], method [K] of str) for observed [K] against null [K, B] (larger is more extreme)."""
    observed = np.asarray(observed, np.float64)
    null = np.asarray(null, np.float64)
    B = null.shape[1]
    exceed = (null >= observed[:, None] * (1 - rtol)).sum(1)
    p = (1.0 + exceed) / (B + 1.0)
    method = np.full(len(observed), "permutation", dtype=object)
    for k in np.flatnonzero(exceed < MIN_EXCEEDANCES):
        est = gpd_tail_p(float(observed[k]), null[k])
        if est is None:
            method[k] = "floor"
        else:
            p[k], method[k] = min(p[k], max(est, MIN_P)), "gpd"
    return p, method


def gpd_tail_p(x0: float, draws: np.ndarray) -> float | None:
    """The GPD tail estimate of P(null ≥ x0), or None when no tail passes the fit test."""
    from scipy import stats
    s = np.sort(np.asarray(draws, np.float64))[::-1]
    B = len(s)
    n_exc = min(MAX_TAIL, B // 4)
    while n_exc >= MIN_TAIL:
        t = 0.5 * (s[n_exc - 1] + s[n_exc])
        exc = s[:n_exc] - t
        if np.ptp(exc) > 0 and x0 > t:
            shape, _, scale = stats.genpareto.fit(exc, floc=0)
            if scale > 0 and _fits(exc, shape, scale):
                return float(n_exc / B * stats.genpareto.sf(x0 - t, shape, 0, scale))
        n_exc -= 10
    return None


def _anderson_darling(u: np.ndarray) -> float:
    """A² of sorted-or-not uniforms u (the fitted CDF at each sample)."""
    u = np.clip(np.sort(u), 1e-12, 1 - 1e-12)
    n = len(u)
    i = np.arange(1, n + 1)
    return float(-n - np.mean((2 * i - 1) * (np.log(u) + np.log1p(-u[::-1]))))


def _fits(exc: np.ndarray, shape: float, scale: float) -> bool:
    """Whether the fitted GPD passes the Anderson–Darling test at GOF_ALPHA."""
    from scipy import stats
    a2 = _anderson_darling(stats.genpareto.cdf(exc, shape, 0, scale))
    return a2 <= float(np.polyval(AD_CRITICAL, np.clip(shape, -0.5, 1.0)))


def ad_critical_by_bootstrap(n: int, shape: float) -> float:
    """The 1 − GOF_ALPHA quantile of A² for a GPD of this shape whose shape and scale are
    estimated from n draws (parametric bootstrap; A² is scale-free, so scale 1)."""
    from scipy import stats
    rng = np.random.default_rng([n, int(round((shape + 1) * 10))])
    a2 = np.empty(GOF_DRAWS)
    for j in range(GOF_DRAWS):
        x = stats.genpareto.rvs(shape, 0, 1.0, size=n, random_state=rng)
        c, _, sc = stats.genpareto.fit(x, floc=0)
        a2[j] = _anderson_darling(stats.genpareto.cdf(x, c, 0, sc))
    return float(np.quantile(a2, 1 - GOF_ALPHA))


def floor_q(units: int, draws: int) -> float:
    """The q-value Benjamini–Hochberg gives one unit alone at the permutation floor."""
    return min(1.0, units / (draws + 1.0))


def floor_q_warning(units: int, draws: int, alpha: float = 0.05) -> str | None:
    """One line when B is too small for a lone unit at the floor to reach q ≤ alpha, else None."""
    q = floor_q(units, draws)
    if q <= alpha:
        return None
    need = int(np.ceil(units / alpha)) - 1
    return (f"--null {draws} over {units} units: a unit alone at the permutation floor "
            f"1/{draws + 1} gets q = {q:.2f} > {alpha}; its p-value is estimated from the null's "
            f"tail (generalised Pareto fit, column p_method), or use --null {need} or more")


if __name__ == "__main__":          # the points AD_CRITICAL is fitted to
    for s in np.round(np.arange(-0.5, 1.01, 0.1), 1):
        print(f"{s:+.1f} {ad_critical_by_bootstrap(50, float(s)):.3f}", flush=True)
