"""FGSM with a random start (Wong, Rice & Kolter, "Fast is better than free", ICLR 2020).

Threat model: L-inf ball of radius eps intersected with [0, 1], white-box, untargeted::

    delta_0 ~ U([-eps, eps]^(C x H x W))                 the random start, projected onto the box
    x_1 = clip_[0,1](clip_eps(x + delta_0 + alpha * sign(grad_x CE(f(x + delta_0), y))))

with alpha = 1.25 eps by default (:data:`ddcat.constants.FGSM_RS_STEP`, the paper's setting: a step
larger than eps is what lets a single step reach the ball's faces from an interior start). The result
is the last iterate x_1, not the better of x_0 and x_1 (Wong et al.'s Alg. 3). Cost: one forward and
one input-gradient backward. It is the training attack of ``--method fgsm-rs``
(:mod:`ddcat.training.fgsm_rs`) and of single-step DDC-AT (``attack.name: fgsm-rs``); as an
evaluation attack (``ddcat eval --attack fgsm-rs``) it is a weak single-step baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ddcat.attacks import losses as L
from ddcat.attacks.base import Attack, set_field
from ddcat.attacks.checks import check_alpha, check_eps, check_precision
from ddcat.attacks.iterative import uniform_start
from ddcat.attacks.projection import ball_bounds, project_with_bounds
from ddcat.constants import EPS, FGSM_RS_STEP


@dataclass(frozen=True)
class RandomStartFGSM(Attack):
    """One FGSM step of size ``alpha`` from a uniform random point of the eps-ball.

    ``images`` (N, C, H, W) in [0, 1], ``labels`` (N, H, W) with 255 = ignore; returns x_1 with
    ``|x_1 - images| <= eps`` and ``0 <= x_1 <= 1``. The start is drawn on a CPU generator seeded
    with the call's ``seed`` (the loop passes a per-iteration seed), so it touches no global RNG."""

    label: ClassVar[str] = "FGSM-RS"
    randomized: ClassVar[bool] = True

    eps: float = EPS
    alpha: float = FGSM_RS_STEP * EPS
    seed: int = 0
    precision: str = "fp32"
    steps: int = field(default=1, init=False)  # one step, not a constructor argument (as FGSM)
    targeted: bool = field(default=False, init=False)  # untargeted only

    def __post_init__(self) -> None:
        set_field(self, "eps", check_eps(self.eps))
        set_field(self, "alpha", check_alpha(self.alpha))
        set_field(self, "precision", check_precision(self.precision))

    @property
    def starts_at_clean(self) -> bool:
        return self.eps == 0

    def _run(self, fwd, images, labels, score, seed):
        lower, upper = ball_bounds(images, self.eps)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        x0 = uniform_start(images, self.eps, lower, upper, gen)
        _, _, grad = fwd.loss_and_grad(x0, lambda logits: L.ce(logits, labels))
        return project_with_bounds(x0 + self.alpha * grad.sign(), lower, upper), None
