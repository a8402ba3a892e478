"""The statistics of SegCertify (Fischer, Baader & Vechev, "Scalable Certified Segmentation via
Randomized Smoothing", ICML 2021), as small pure functions.

Threat model: L2 perturbations of the [0, 1] input image of norm < R. The smoothed classifier
``g_tau(x)_i`` outputs, for pixel i, the class c with P_eps(f(x + eps)_i = c) > tau under
eps ~ N(0, sigma^2 I), or abstains when no class has that probability. A pixel whose test below
rejects H0: P(c_i) <= tau keeps its class within the L2 ball of radius

    R = sigma * Phi^-1(tau)                                     (SegCertify, Theorem 3.1 / eq. 3)

With probability >= 1 - alpha every non-abstaining pixel of an image equals g_tau's output there
(the family-wise error rate over the image's tested pixels is controlled by Holm or Bonferroni).

Nothing here needs SciPy: the binomial tail is summed exactly in log space from ``lgamma``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

#: The multiple-testing corrections over an image's pixels (``--correction``).
CORRECTIONS = ("holm", "bonferroni")


def log_binomial_pmf(n: int, p: float) -> torch.Tensor:
    """``log P[Bin(n, p) = j]`` for j = 0..n, float64, shape (n + 1,); 0 < p < 1."""
    j = torch.arange(n + 1, dtype=torch.float64)
    log_choose = math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
    return log_choose + j * math.log(p) + (n - j) * math.log1p(-p)


def binomial_log_sf_table(n: int, p: float) -> torch.Tensor:
    """``log P[Bin(n, p) >= k]`` for k = 0..n + 1, float64, shape (n + 2,) (the last entry is -inf).

    The upper tails of the pmf summed from the top with ``logcumsumexp``: exact up to float64
    rounding for any n (one O(n) pass, then every pixel is a table look-up)."""
    tail = torch.logcumsumexp(log_binomial_pmf(n, p).flip(0), dim=0).flip(0).clamp(max=0.0)
    tail[0] = 0.0  # P[X >= 0] = 1 exactly (the sum carries rounding)
    return torch.cat([tail, torch.tensor([-math.inf], dtype=torch.float64)])


def binomial_pvalues(counts: torch.Tensor, n: int, tau: float) -> torch.Tensor:
    """One-sided p-values ``P[Bin(n, tau) >= counts]`` of H0: P(class) <= tau (float64, the shape
    of ``counts``, integers in [0, n]); ``scipy.stats.binom.sf(counts - 1, n, tau)``."""
    if counts.numel() and (int(counts.min()) < 0 or int(counts.max()) > n):
        raise ValueError(f"counts must lie in [0, {n}]")
    table = binomial_log_sf_table(n, tau).to(counts.device)
    return table[counts.long()].exp()


def bonferroni_reject(pvalues: torch.Tensor, alpha: float) -> torch.Tensor:
    """Reject H0_i where p_i <= alpha / m (m = the number of hypotheses, ``pvalues.numel()``)."""
    m = pvalues.numel()
    return pvalues <= alpha / max(m, 1)


def holm_reject(pvalues: torch.Tensor, alpha: float) -> torch.Tensor:
    """Holm's step-down procedure (FWER <= alpha): with p sorted ascending, p_(1) <= ... <= p_(m),
    reject H_(1), ..., H_(j-1) where j is the first index (1-based) with p_(j) > alpha / (m - j + 1).
    Returns a boolean mask in the input's order and shape (ties: any order gives the same set)."""
    flat = pvalues.reshape(-1)
    m = flat.numel()
    if m == 0:
        return torch.zeros_like(pvalues, dtype=torch.bool)
    order = torch.argsort(flat, stable=True)
    thresholds = alpha / torch.arange(m, 0, -1, dtype=torch.float64, device=flat.device)  # alpha / (m - j + 1)
    passed = flat[order].to(torch.float64) <= thresholds
    keep = torch.cumprod(passed.to(torch.int64), dim=0).bool()  # rejected up to the first failure
    reject = torch.zeros(m, dtype=torch.bool, device=flat.device)
    reject[order] = keep
    return reject.reshape(pvalues.shape)


def reject(pvalues: torch.Tensor, alpha: float, correction: str) -> torch.Tensor:
    """The hypotheses ``correction`` (``holm`` | ``bonferroni``) rejects at family-wise level alpha."""
    if correction == "holm":
        return holm_reject(pvalues, alpha)
    if correction == "bonferroni":
        return bonferroni_reject(pvalues, alpha)
    raise ValueError(f"unknown correction {correction!r}; valid: {', '.join(CORRECTIONS)}")


def certified_radius(sigma: float, tau: float) -> float:
    """R = sigma * Phi^-1(tau): the L2 radius every certified pixel holds its class in."""
    return sigma * NormalDist().inv_cdf(tau)


def min_samples(tau: float, alpha: float, pixels: int) -> int:
    """The smallest n at which any pixel can be certified among ``pixels`` tested ones: the
    smallest p-value is tau^n (all n samples agree), and both corrections first compare it with
    alpha / pixels, so n >= log(alpha / pixels) / log(tau)."""
    n = max(1, math.ceil(math.log(alpha / pixels) / math.log(tau)))
    while n > 1 and (n - 1) * math.log(tau) <= math.log(alpha / pixels):  # float rounding, either way
        n -= 1
    while n * math.log(tau) > math.log(alpha / pixels):
        n += 1
    return n
