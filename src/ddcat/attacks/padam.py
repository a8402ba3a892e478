"""PAdam: projected Adam on the perturbation (Halmosi, Mohos & Jelasity, ECCV 2024, package ``rse``).

Threat model: the L-inf ball of radius ``eps`` around the clean images intersected with [0, 1]
(``norm="l2"``: the L2 ball per image, each iterate projected onto the ball and then clipped to
[0, 1] as the reference implementations do, :mod:`ddcat.attacks.norms`), white-box, untargeted.

The algorithm (rse's ``padam``; shapes: images ``(N, C, H, W)``, labels ``(N, H, W)``, logits
``(N, K, H, W)``):

* ``delta_0`` uniform in ``[-eps, eps]`` (L2: a random direction at distance eps), then
  ``x_0 = P(x + delta_0)`` (into the ball and the box), ``delta_0 = x_0 - x``;
* for ``t = 1..T``: ``g_t`` = the input gradient of the loss at ``x_{t-1}``; one Adam step that
  *ascends* the loss (:func:`adam_step`: AMSGrad, betas 0.9 / 0.999, eps 1e-8, learning rate
  ``lr``, exactly ``torch.optim.Adam(amsgrad=True, maximize=True)``); ``x_t = P(x + delta_t)``,
  ``delta_t = x_t - x`` (the clamp to the ball and the box). Adam's moments are never reset.

Losses: ``ce`` (PAdam-CE) and ``cosine`` (PAdam-Cos, ``1 - z_y / ||z||_2`` on raw logits),
per pixel, mean over each image's valid pixels (labels != 255: an explicit mask of labelled
pixels), summed over the batch. rse takes the mean over the whole batch and every pixel instead:
that scales each image's gradient by a constant, which Adam ignores up to its eps 1e-8, and makes an
image's attack depend on its batch; here it does not.

Returned: per image the evaluated iterate with the FEWEST correctly classified valid pixels (ties:
higher CE; :class:`~ddcat.attacks.scoring.Score`) over ``x_0 .. x_T``. rse returns the last
iterate ``x_T``; the best one is never worse for the reported accuracy.

Defaults (rse): 200 steps, ``lr`` 2/255 (L-inf). For L2 (rse has none) the default ``lr`` is
``eps / (4 sqrt(C H W))``: Adam's first step moves every value by about ``lr``, so its L2 length is
eps / 4, as rse's 2/255 is a quarter of its 8/255 L-inf budget.
Cost: ``steps`` forward + input-gradient passes and one no-grad forward. Deterministic for a
given ``seed`` (the random start is drawn from a local CPU ``torch.Generator``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch

from ddcat.attacks import losses as L
from ddcat.attacks.base import Attack, set_field
from ddcat.attacks.checks import check_count, check_eps, check_precision, check_seed
from ddcat.attacks.norms import NORMS, Ball, check_norm
from ddcat.attacks.scoring import Score, keep_better
from ddcat.constants import EPS
from ddcat.errors import DdcatError

__all__ = ["PAdam", "adam_step", "PADAM_LR"]

PADAM_LR = 2 / 255  # rse's learning rate (L-inf)


def adam_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict[str, torch.Tensor],
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    amsgrad: bool = True,
    maximize: bool = True,
) -> torch.Tensor:
    """One Adam step (Kingma & Ba 2015; AMSGrad: Reddi et al. 2018) as ``torch.optim.Adam`` takes
    it, as a pure function: returns the new ``param``; ``state`` (``m``, ``v``, ``v_max``, created
    on the first call) is updated in place. ``step`` = t, from 1.

    ``g = -grad if maximize else grad``; ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``v_max = max(v_max, v)`` (AMSGrad); ``param - lr / (1 - b1^t) * m / (sqrt(v_max or v) /
    sqrt(1 - b2^t) + eps)``."""
    b1, b2 = betas
    g = -grad if maximize else grad
    if not state:
        state.update(m=torch.zeros_like(param), v=torch.zeros_like(param), v_max=torch.zeros_like(param))
    state["m"].lerp_(g, 1 - b1)
    state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
    bias1 = 1 - b1**step
    bias2_sqrt = math.sqrt(1 - b2**step)
    if amsgrad:
        torch.maximum(state["v_max"], state["v"], out=state["v_max"])
        denom = (state["v_max"].sqrt() / bias2_sqrt).add_(eps)
    else:
        denom = (state["v"].sqrt() / bias2_sqrt).add_(eps)
    return param.addcdiv(state["m"], denom, value=-lr / bias1)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
        raise DdcatError(f"PAdam {name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PAdam(Attack):
    """``PAdam(eps=8/255, steps=200, loss="ce")(model, images, labels)``; ``loss="cosine"`` is
    PAdam-Cos; default eps :data:`ddcat.constants.EPS`. See the module docstring for the algorithm, defaults and cost.

    Args: ``eps``; ``steps`` T; ``loss`` a name of :data:`ddcat.attacks.losses.LOSSES` ("ce",
    "cosine"); ``lr`` (None: 2/255 for L-inf, ``eps / (4 sqrt(C H W))`` for L2); ``betas``,
    ``adam_eps``, ``amsgrad`` of Adam; ``random_start`` (False: start at the clean images);
    ``seed``; ``precision``; ``norm`` "linf" or "l2"."""

    eps: float = EPS
    steps: int = 200
    loss: str = "ce"
    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    amsgrad: bool = True
    random_start: bool = True
    seed: int = 0
    precision: str = "fp32"
    norm: str = "linf"

    targeted = False  # class attribute: PAdam here is untargeted
    label: ClassVar[str] = "PAdam"
    budget: ClassVar[str] = "iters"
    randomized: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __post_init__(self) -> None:
        set_field(self, "eps", check_eps(self.eps))
        set_field(self, "steps", check_count("steps", self.steps, 0))
        set_field(self, "loss", L.loss_name(self.loss, targeted=False))
        if self.lr is not None:
            set_field(self, "lr", _check_positive("lr", self.lr))
        try:
            betas = tuple(float(b) for b in self.betas)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise DdcatError(f"PAdam betas must be two numbers in [0, 1), got {self.betas!r}") from None
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise DdcatError(f"PAdam betas must be two numbers in [0, 1), got {self.betas!r}")
        set_field(self, "betas", betas)
        set_field(self, "adam_eps", _check_positive("adam_eps", self.adam_eps))
        set_field(self, "amsgrad", bool(self.amsgrad))
        set_field(self, "random_start", bool(self.random_start))
        set_field(self, "seed", check_seed(self.seed))
        set_field(self, "precision", check_precision(self.precision))
        set_field(self, "norm", check_norm(self.norm, "PAdam"))

    @property
    def starts_at_clean(self) -> bool:
        return not self.random_start or self.eps == 0

    def learning_rate(self, images: torch.Tensor) -> float:
        """``lr``, or its default for the norm and the image size (module docstring)."""
        if self.lr is not None:
            return self.lr
        if self.norm == "linf":
            return PADAM_LR
        return self.eps / (4.0 * math.sqrt(max(images[0].numel(), 1)))

    def _run(self, fwd, images, labels, score, seed):
        if self.steps == 0:
            return images.clone(), None
        ball = Ball(self.norm, images, self.eps)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        lr = self.learning_rate(images)
        loss_fn = L.LOSSES[self.loss]
        x = images if self.starts_at_clean else ball.start(gen)
        delta = (x - images).float()
        state: dict[str, torch.Tensor] = {}
        best_x: torch.Tensor | None = None
        best: Score | None = None
        for t in range(1, self.steps + 1):
            logits, _, grad = fwd.loss_and_grad(x, lambda z, t=t: loss_fn(z, labels, step=t, total=self.steps))
            best_x, best = keep_better(best_x, best, x, Score.of(logits, labels, False))
            delta = adam_step(delta, grad.float(), state, t, lr, self.betas, self.adam_eps, self.amsgrad)
            x = ball.project(images + delta.to(images.dtype))
            delta = (x - images).float()
        best_x, best = keep_better(best_x, best, x, Score.of(fwd.no_grad_logits(x), labels, False))
        assert best_x is not None
        return best_x, best
