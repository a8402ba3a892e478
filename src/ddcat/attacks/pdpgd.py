"""PDPGD, primal-dual proximal gradient descent (Matyasko & Chau, "PDPGD: Primal-Dual Proximal Gradient
Descent Adversarial Attack", arXiv 2106.01538), adapted to segmentation as in adv-lib 0.2.8, L-inf.

Threat model: white-box, untargeted, images in [0, 1]; a minimum-norm attack run under the L-inf
budget ``eps`` in one of the two ways of :mod:`ddcat.attacks.min_norm` (``box="project"``, the
default, or rse's ``box="clip"``).

The problem: ``min ||r||_inf`` subject to ``m_j(x + r) < 0`` for the labelled pixels ``j``
(``m = z_y - max_{k != y} z_k``), solved per image on the Lagrangian with one dual variable per pixel
(softmax-parametrised, ``lambda_0 = -log(#labelled)``; ``softmax_plus_one`` gives the pixel weights
``w_j`` and the norm's weight ``1 - sum w``). Iteration ``i = 0..T-1`` from ``r = 0``:

1. forward at ``x + r``; track the returned iterate (:class:`~ddcat.attacks.min_norm.MinNormBest`,
   distance ``||r||_inf``; ``project``: the best :class:`~ddcat.attacks.scoring.Score`);
2. ``w <- 0.9 w + 0.1 softmax_plus_one(lambda)`` (from ``i = 1``; ``dual_ema`` 0.9);
3. ``g = grad_r sum_j w_j softplus(m_j)``; Adam on ``r`` (betas 0.9 / 0.999, eps 1e-8, bias
   corrected) with step ``primal_lr * 0.01^(i / T)``; then ``r`` is projected onto ``[0, 1] - x``
   (``project``: onto the eps-box and [0, 1]);
4. proximal Adam (Melchior et al. 2019) for the norm: up to ``proximal_steps`` (5) sub-iterations
   ``z <- P(prox_{mu ||.||_inf}(z - H (z - r)))`` with ``H = denom / max(denom)``, ``mu = (1 - sum w)
   / sum w * step / max(denom)``, stopped per image once ``||z - z_prev||_2 / ||z||_2 < 0.01``;
   ``r <- z``;
5. dual ascent ``lambda_j += theta_i sign(m_j)``, ``theta_i = dual_lr ((T - 1 - i) / (T - 1) * 0.9 +
   0.1)``, clamped to ``[log 1e-12, -log 1e-12]``.

adv-lib's defaults except ``primal_lr`` = 0.01 (rse's; adv-lib: 0.1); constraint masking (off in
adv-lib's defaults) is not implemented. ``T = 1`` uses ``theta = dual_lr`` (adv-lib divides by 0).

Shapes: images ``(N, C, H, W)``, labels ``(N, H, W)`` (255 = ignore), logits ``(N, K, H, W)``.
Cost: ``steps`` forwards and ``steps`` input-gradient backwards on every image with labelled pixels
(no early stop: a minimum-norm attack keeps shrinking the norm), plus one sort per image and
proximal sub-iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ddcat.attacks.base import set_field
from ddcat.attacks.checks import check_count
from ddcat.attacks.min_norm import (
    inside,
    BestScore,
    MinNormAttack,
    MinNormBest,
    check_fraction,
    check_positive,
    difference_of_logits,
    fooled_fraction,
    prox_linf,
    softmax_plus_one,
)

__all__ = ["PDPGD", "dual_step_size", "primal_step_size"]

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
PRIMAL_LR_DECREASE = 0.01
DUAL_LR_DECREASE = 0.1
DUAL_RATIO_INIT = 1.0
DUAL_MIN_RATIO = 1e-12
PROX_TOLERANCE = 1e-2


def primal_step_size(lr: float, i: int, total: int) -> float:
    """``lr * 0.01^(i / total)`` (exponential decay to 1 % of ``lr``)."""
    return lr * PRIMAL_LR_DECREASE ** (i / total)


def dual_step_size(lr: float, i: int, total: int) -> float:
    """``lr * ((total - 1 - i) / (total - 1) * 0.9 + 0.1)`` (linear decay to 10 %); ``lr`` for total 1."""
    frac = (total - 1 - i) / (total - 1) if total > 1 else 1.0
    return lr * (frac * (1 - DUAL_LR_DECREASE) + DUAL_LR_DECREASE)


@dataclass(frozen=True)
class PDPGD(MinNormAttack):
    """PDPGD, L-inf (see the module docstring). ``PDPGD(eps=8/255)(model, images, labels)``.

    Args: ``eps`` budget; ``steps`` iterations (500); ``primal_lr`` Adam's initial step (0.01, rse's);
    ``dual_lr`` (0.1); ``dual_ema`` (0.9); ``proximal_steps`` (5); ``adv_threshold`` (0.99);
    ``box`` "project" or "clip"; ``precision``. Deterministic (no randomness)."""

    steps: int = 500
    primal_lr: float = 0.01
    dual_lr: float = 0.1
    dual_ema: float = 0.9
    proximal_steps: int = 5

    label: ClassVar[str] = "PDPGD"

    def __post_init__(self) -> None:
        super().__post_init__()
        set_field(self, "primal_lr", check_positive("primal_lr", self.primal_lr))
        set_field(self, "dual_lr", check_positive("dual_lr", self.dual_lr))
        set_field(self, "dual_ema", check_fraction("dual_ema", self.dual_ema, open_lo=False, open_hi=True))
        set_field(self, "proximal_steps", check_count("proximal_steps", self.proximal_steps, 1))

    def _attack(self, fwd, x, y, valid, counts, lower, upper):
        n, total = x.shape[0], self.steps
        view = lambda t: t.view(n, *([1] * (x.dim() - 1)))  # noqa: E731
        safe = self._safe(y, valid)
        idx = torch.arange(n, device=x.device)
        r = torch.zeros_like(x)
        exp_avg, exp_avg_sq = torch.zeros_like(x), torch.zeros_like(x)
        log_min = math.log(DUAL_MIN_RATIO)
        lam = torch.zeros(y.shape, dtype=torch.float64, device=x.device)
        lam += (counts.float() * DUAL_RATIO_INIT).log().neg().view(-1, 1, 1)
        lam[~valid] = float("-inf")
        lam_ema = softmax_plus_one(lam)
        tracker = MinNormBest(x, self.adv_threshold) if self.box == "clip" else None
        best = BestScore(x) if self.box == "project" else None

        for i in range(total):
            with torch.enable_grad():
                r.requires_grad_(True)
                x_adv = inside(x + r, lower, upper, self.box)
                logits = fwd.logits(x_adv)
                if tracker is not None:
                    dist = (x_adv.detach() - x).flatten(1).norm(p=float("inf"), dim=1)
                    fooled = logits.argmax(dim=1) != y
                    tracker.update(x_adv, dist, fooled_fraction(fooled, valid, counts))
                if best is not None:
                    best.update(idx, x_adv, logits, y)
                margin = difference_of_logits(logits.float(), safe)
                if i:
                    lam_ema = torch.lerp(lam_ema, softmax_plus_one(lam), 1 - self.dual_ema)
                weights = lam_ema * valid
                loss = (F.softplus(margin) * weights).flatten(1).sum(dim=1)
                (g,) = torch.autograd.grad(loss.sum(), r)
            r = r.detach()
            grad_lam = margin.detach().sign() * valid

            # Adam on r, then the projection onto the feasible set
            exp_avg = torch.lerp(exp_avg, g, 1 - BETA1)
            exp_avg_sq = torch.addcmul(exp_avg_sq * BETA2, g, g, value=1 - BETA2)
            bc1, bc2 = 1 - BETA1 ** (i + 1), 1 - BETA2 ** (i + 1)
            denom = exp_avg_sq.sqrt() / math.sqrt(bc2) + ADAM_EPS
            step = primal_step_size(self.primal_lr, i, total)
            r = torch.addcdiv(r, exp_avg, denom, value=-step / bc1)
            r = torch.clamp(x + r, lower, upper) - x

            # proximal Adam for mu ||r||_inf
            psi = denom.flatten(1).amax(dim=1)
            w_sum = weights.flatten(1).sum(dim=1)
            mu = ((1 - w_sum) / w_sum).float() * (step / psi)
            h = denom / view(psi)
            z, change = r, torch.ones(n, device=x.device)
            for _ in range(self.proximal_steps):
                z_prev = z
                z_new = prox_linf(torch.addcmul(z, h, z - r, value=-1), mu)
                z_new = torch.clamp(x + z_new, lower, upper) - x
                z = torch.where(view(change > PROX_TOLERANCE), z_new, z_prev)
                change = (z - z_prev).flatten(1).norm(p=2, dim=1) / z.flatten(1).norm(p=2, dim=1)
                if bool((change < PROX_TOLERANCE).all()):
                    break
            r = z

            # dual ascent
            lam = (lam + dual_step_size(self.dual_lr, i, total) * grad_lam).clamp(log_min, -log_min)
            lam[~valid] = float("-inf")
        return best.x if best is not None else tracker.x
