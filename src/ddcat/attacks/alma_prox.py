"""ALMA-prox (Rony, Pesquet & Ben Ayed, "Proximal Splitting Adversarial Attack for Semantic
Segmentation", CVPR 2023, arXiv 2206.07179), as in adv-lib 0.2.8, L-inf.

Threat model: white-box, untargeted, images in [0, 1]; a minimum-norm attack run under the L-inf
budget ``eps`` in one of the two ways of :mod:`ddcat.attacks.min_norm` (``box="project"``, the
default, or rse's ``box="clip"``). Needs at least 3 classes (its DLR constraint uses the top 3 logits).

An augmented Lagrangian with one constraint per labelled pixel, ``c_j = w * DLR_j`` (DLR:
:func:`~ddcat.attacks.min_norm.difference_of_logits_ratio` with tolerance 1e-4; ``w`` a per-image
scale in [0.1, 1], divided by 1.02 while the image is adversarial and by 0.98 otherwise), the
penalty-Lagrangian ``P(c, rho, mu)`` (:func:`penalty`), multipliers ``mu`` (init 1) and penalties
``rho`` (init 0.01) per pixel. Iteration ``i = 0..T-1`` from ``delta = 0``:

1. forward at ``x + delta``; track the returned iterate (:class:`~ddcat.attacks.min_norm.MinNormBest`,
   distance ``||delta||_inf``; ``project``: the best :class:`~ddcat.attacks.scoring.Score`); the first
   iteration ``s`` (before ``T // 2``) at which an image is adversarial starts its step decay;
2. constraint masking: the ``k = floor(0.01 #labelled * i / (T - 1))`` largest constraints minus one
   are dropped (adv-lib keeps the k-th itself; ``k = 0``: none dropped);
3. every 10 iterations ``rho <- 2 rho`` where the constraint neither improved (``c <= 0.95 c_prev``)
   nor was fooled since the last check; from ``i = 1``, ``mu <- 0.8 mu + 0.2 P'(c)`` (0 off the
   mask), clamped to [1e-12, 1];
4. ``g = grad_delta sum_j P(c_j, rho_j, mu_j)`` over the kept constraints; RMSprop metric
   ``s <- 0.8 s + 0.2 g^2``, ``H = max(sqrt(s / (1 - 0.8^(i+1))), 1e-8)``; step
   ``lambda = lr_init * tau / (max(i - s, 0) + tau)``, ``tau = 0.1 / 0.9 * max(T - s, 1)``;
5. ``delta <- prox(delta - lambda g / H)``, the exact proximal operator of ``lambda ||.||_inf`` plus
   the box's indicator in the metric ``H`` (:func:`~ddcat.attacks.min_norm.prox_linf_box`; the box
   is ``[0, 1] - x``, with ``project`` the eps-box intersected with it).

Deliberate differences from adv-lib 0.2.8: the proximal operator is solved exactly (adv-lib: a
ternary search to 1e-6 whose step count depends on the batch); an image with ``k = 0`` while
another has ``k > 0`` keeps all constraints (adv-lib gathers at index -1: an error on CPU).
``penalty_grad="adv-lib"`` (default, for parity with rse) uses adv-lib's backward of ``P``, which for
``c >= 0`` is ``mu c + 2 mu rho c + rho^2 c^2 / 2``, where the derivative of its forward is
``mu + 2 mu rho c + rho^2 c^2 / 2``; ``penalty_grad="exact"`` uses the derivative.

Shapes: images ``(N, C, H, W)``, labels ``(N, H, W)`` (255 = ignore), logits ``(N, K, H, W)``,
``K >= 3``. Cost: ``steps`` forwards and ``steps`` input-gradient backwards on every image with
labelled pixels, plus one sort per image and iteration for the proximal step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ddcat.attacks.base import set_field
from ddcat.attacks.min_norm import (
    inside,
    BestScore,
    MinNormAttack,
    MinNormBest,
    check_positive,
    difference_of_logits_ratio,
    fooled_fraction,
    prox_linf_box,
)
from ddcat.errors import DdcatError

__all__ = ["ALMAProx", "penalty", "penalty_grad", "PENALTY_GRADS", "lr_decay"]

PENALTY_GRADS = ("adv-lib", "exact")
LR_REDUCTION = 0.1
MU_INIT, RHO_INIT = 1.0, 0.01
CHECK_STEPS, TAU, RHO_GROWTH = 10, 0.95, 2.0
ALPHA = 0.8  # EMA of mu and of the RMS metric
SCALE_MIN, SCALE_MAX, SCALE_INIT, SCALE_GAMMA = 0.1, 1.0, 1.0, 0.02
LOGIT_TOLERANCE = 1e-4


def penalty(c: torch.Tensor, rho: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """adv-lib's penalty-Lagrangian (P2 of Birgin et al. with ``max(rho, 1)`` below 0):
    ``mu c + mu rho c^2 + rho^2 c^3 / 6`` for ``c >= 0``, ``mu c / (1 - max(rho, 1) c)`` for ``c < 0``."""
    above = mu * c + mu * rho * c**2 + rho**2 * c**3 / 6
    below = mu * c / (1 - rho.clamp(min=1) * c.clamp(max=0))
    return torch.where(c >= 0, above, below)


def penalty_grad(c: torch.Tensor, rho: torch.Tensor, mu: torch.Tensor, kind: str = "adv-lib") -> torch.Tensor:
    """``dP/dc`` as the attack uses it: below 0 ``mu / (1 - max(rho, 1) c)^2`` (both kinds); for
    ``c >= 0`` ``mu + 2 mu rho c + rho^2 c^2 / 2`` (``exact``) or adv-lib 0.2.8's backward
    ``mu c + 2 mu rho c + rho^2 c^2 / 2`` (``adv-lib``)."""
    first = mu if kind == "exact" else mu * c
    above = first + 2 * mu * rho * c + rho**2 * c**2 / 2
    below = mu / (1 - rho.clamp(min=1) * c.clamp(max=0)).square()
    return torch.where(c >= 0, above, below)


def lr_decay(lr: torch.Tensor, i: int, found_at: torch.Tensor, total: int) -> torch.Tensor:
    """ALMA-prox's step ``lr * tau / (max(i - s, 0) + tau)``, ``tau = 0.1 / 0.9 * max(T - s, 1)``
    (``s`` = ``found_at``, per image): constant until ``s``, then it decays to ``0.1 lr`` at ``T``."""
    tangent = LR_REDUCTION / (1 - LR_REDUCTION) * (total - found_at).clamp(min=1)
    return lr * tangent / ((i - found_at).clamp(min=0) + tangent)


@dataclass(frozen=True)
class ALMAProx(MinNormAttack):
    """ALMA-prox, L-inf (see the module docstring). ``ALMAProx(eps=8/255)(model, images, labels)``.

    Args: ``eps`` budget; ``steps`` iterations (500); ``lr_init`` initial step (1e-4, rse's; adv-lib:
    1e-3); ``adv_threshold`` (0.99); ``penalty_grad`` "adv-lib" or "exact"; ``box`` "project" or
    "clip"; ``precision``. Deterministic (no randomness)."""

    steps: int = 500
    lr_init: float = 1e-4
    penalty_grad: str = "adv-lib"

    label: ClassVar[str] = "ALMA-prox"

    def __post_init__(self) -> None:
        super().__post_init__()
        set_field(self, "lr_init", check_positive("lr_init", self.lr_init))
        if self.penalty_grad not in PENALTY_GRADS:
            raise DdcatError(f"ALMA-prox penalty_grad must be one of {', '.join(PENALTY_GRADS)}, got {self.penalty_grad!r}")

    def _attack(self, fwd, x, y, valid, counts, lower, upper):
        n, total = x.shape[0], self.steps
        idx = torch.arange(n, device=x.device)
        safe = self._safe(y, valid)
        delta = torch.zeros_like(x)
        lo_d, hi_d = lower - x, upper - x
        lr = torch.full((n,), self.lr_init, device=x.device)
        sq = torch.zeros_like(x)
        mu = torch.full(y.shape, MU_INIT, dtype=torch.float64, device=x.device)
        rho = torch.full(y.shape, RHO_INIT, dtype=torch.float64, device=x.device)
        scale = torch.full((n,), SCALE_INIT, device=x.device)
        valid_inf = torch.zeros(y.shape, device=x.device).masked_fill(~valid, float("inf"))
        keep = valid
        fooled_since = torch.zeros_like(valid)
        found_at = torch.full((n,), float(total // 2), device=x.device)
        tracker = MinNormBest(x, self.adv_threshold)
        best = BestScore(x) if self.box == "project" else None
        prev = None

        for i in range(total):
            with torch.enable_grad():
                delta.requires_grad_(True)
                x_adv = inside(x + delta, lower, upper, self.box)
                logits = fwd.logits(x_adv)
                if logits.shape[1] < 3:
                    raise DdcatError(f"alma-prox needs a model with at least 3 classes (its DLR uses the top 3 logits), got {logits.shape[1]}")
                dist = delta.detach().flatten(1).norm(p=float("inf"), dim=1)
                fooled = logits.argmax(dim=1) != y
                fooled_since |= fooled
                was_found = tracker.found.clone()
                is_adv = tracker.update(x_adv, dist, fooled_fraction(fooled, valid, counts))
                if best is not None:
                    best.update(idx, x_adv, logits, y)
                if i < total // 2:
                    found_at = torch.where(~was_found & is_adv, float(i), found_at)
                scale = (scale / torch.where(is_adv, 1 + SCALE_GAMMA, 1 - SCALE_GAMMA)).clamp(SCALE_MIN, SCALE_MAX)
                cons = scale.view(-1, 1, 1) * difference_of_logits_ratio(logits.float(), safe, LOGIT_TOLERANCE)

                # constraint masking, with a share of dropped constraints growing linearly to 1 - threshold
                k = ((1 - self.adv_threshold) * counts).mul(i / (total - 1) if total > 1 else 0.0).long()
                if bool(k.any()):
                    top = (cons.detach() - valid_inf).flatten(1).topk(int(k.max())).values
                    xi = top.gather(1, (k - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
                    keep = valid & ((cons <= xi.view(-1, 1, 1)) | (k == 0).view(-1, 1, 1))

                if i == 0:
                    prev = cons.detach()
                elif (i + 1) % CHECK_STEPS == 0:
                    improved = cons.detach() * keep <= TAU * prev
                    rho = torch.where(~(fooled_since | improved), RHO_GROWTH * rho, rho)
                    prev = cons.detach()
                    fooled_since = torch.zeros_like(fooled_since)
                c64 = cons.detach().double()
                if i:
                    new_mu = torch.where(keep, penalty_grad(c64, rho, mu, self.penalty_grad), 0.0)
                    mu = torch.lerp(mu, new_mu, 1 - ALPHA).clamp(1e-12, 1)
                # the gradient of sum P(c) over the kept constraints, with P' as chosen
                slope = (penalty_grad(c64, rho, mu, self.penalty_grad) * keep).detach()
                (g,) = torch.autograd.grad((slope * cons).sum(), delta)
            delta = delta.detach()
            step = lr_decay(lr, i, found_at, total)
            sq = torch.addcmul(sq * ALPHA, g, g, value=1 - ALPHA)
            h = (sq / (1 - ALPHA ** (i + 1))).sqrt().clamp(min=1e-8)
            delta = torch.addcmul(delta, g, step.view(-1, 1, 1, 1) / h, value=-1)
            delta = prox_linf_box(delta, step, lo_d, hi_d, h)
        return best.x if best is not None else tracker.x
