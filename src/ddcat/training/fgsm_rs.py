"""FGSM with a random start ("fast adversarial training", Wong, Rice & Kolter, ICLR 2020).

Threat model: L-inf ball of radius eps intersected with [0, 1], white-box, untargeted. For each
image of the adversarial share of the batch (the last f m images, as in SAT)::

    delta_0 ~ U([-eps, eps]^(C x H x W))                 the random start, projected onto the box
    x_1 = clip_[0,1](clip_eps(x + delta_0 + alpha * sign(grad_x CE(f(x + delta_0), y))))

with alpha = ``fgsm_rs_step`` x eps (1.25 eps, the paper's setting: a step larger than eps is what
lets a single step reach the ball's faces from an interior start). The result is the last iterate
x_1, not the better of x_0 and x_1 (Wong et al.'s Alg. 3). Cost: one forward and one input-gradient
backward on the adversarial images, plus SAT's training forward / backward: about 1.5x clean
training at f = 0.5 where SAT with BIM-3 costs about 2x.

The same attack is the inner attack of DDC-AT when ``attack.name: fgsm-rs``: its division needs
B_adv, the combined prediction on the adversarial version of each clean image, which is then the
prediction on x_1 above; the mask labels stay M = 1[B_clean != B_adv] on the clean rows and 0 on the
adversarial rows (Alg. 2), only B_adv comes from one random-start step instead of BIM-3. Because the
attack starts at a random point, B_clean costs one separate no-grad forward of the clean half.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddcat.attacks import losses as L
from ddcat.attacks.base import Attack
from ddcat.attacks.checks import check_alpha, check_eps, check_precision
from ddcat.attacks.iterative import uniform_start
from ddcat.attacks.projection import ball_bounds, project_with_bounds
from ddcat.config import DEFAULTS
from ddcat.constants import EPS
from ddcat.training.sat import StandardAdversarialTraining

#: alpha / eps of Wong et al. (2020), Sec. 4: "alpha = 1.25 eps" (declared once, in the config's defaults).
DEFAULT_STEP = DEFAULTS["attack"]["fgsm_rs_step"]


@dataclass(frozen=True)
class RandomStartFGSM(Attack):
    """One FGSM step of size ``alpha`` from a uniform random point of the eps-ball.

    ``images`` (N, C, H, W) in [0, 1], ``labels`` (N, H, W) with 255 = ignore; returns x_1 with
    ``|x_1 - images| <= eps`` and ``0 <= x_1 <= 1``. The start is drawn on a CPU generator seeded
    with the call's ``seed`` (the loop passes a per-iteration seed), so it touches no global RNG."""

    eps: float = EPS
    alpha: float = DEFAULT_STEP * EPS
    seed: int = 0
    precision: str = "fp32"
    steps: int = 1
    targeted: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_eps(self.eps))
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        object.__setattr__(self, "precision", check_precision(self.precision))
        object.__setattr__(self, "steps", 1)
        object.__setattr__(self, "targeted", False)

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


class FastAdversarialTraining(StandardAdversarialTraining):
    """``fgsm-rs``: SAT (Alg. 1's batch split, ``train.adv_fraction``) whose training attack is
    :class:`RandomStartFGSM`. Built by :func:`ddcat.training.loop.build_method` from ``attack.eps``,
    ``attack.fgsm_rs_step`` and ``attack.precision`` (``attack.name`` / ``steps`` / ``alpha`` are
    not read)."""

    name = "fgsm-rs"
