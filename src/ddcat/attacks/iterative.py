"""Gradient-sign attacks: FGSM (eq. 1), BIM (eq. 2) and PGD with any loss of the loss table
(SegPGD and CosPGD are PGD with their losses).

The call protocol and the guarantees every attack gives are in :mod:`ddcat.attacks.base`.
Cost: one step = one forward and one input-gradient backward. FGSM and BIM do nothing else; PGD
adds one no-grad forward per restart to score the last iterate (the forward of step ``t + 1``
scores iterate ``t``). ``steps == 0`` returns the clean images (no forward at all).
``precision="fp32"`` (default) runs the attack forwards with autocast disabled;
``precision="autocast"`` leaves the caller's autocast context as it is. Losses are always computed
from ``logits.float()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Hashable

import torch

from ddcat.attacks import losses as L
from ddcat.attacks.base import Attack, set_field
from ddcat.attacks.checks import (
    check_alpha,
    check_class_counts,
    check_count,
    check_eps,
    check_inputs,
    check_precision,
    check_seed,
)
from ddcat.attacks.forward import Forward, ForwardFn, eval_mode
from ddcat.attacks.norms import NORMS, Ball, check_norm, linf_random_start
from ddcat.attacks.scoring import Score, keep_better
from ddcat.constants import ALPHA, EPS
from ddcat.errors import DdcatError

__all__ = ["FGSM", "BIM", "PGD", "SegPGD", "CosPGD", "uniform_start"]


uniform_start = linf_random_start  # the L-inf random start (kept under its old name)


@dataclass(frozen=True)
class BIM(Attack):
    """Basic iterative method, eq. 2 of the paper: ``x_0 = x``,
    ``x_{t+1} = clip_[0,1](clip_eps(x_t + alpha * sign(grad_x CE(f(x_t), y))))``; no random start.

    Threat model: L-inf, white-box. ``targeted=True``: ``labels`` are target labels and each step
    descends the CE. Cost: exactly ``steps`` forwards and input-gradient backwards, nothing else.

    ``norm="l2"``: the L2 version (steps ``alpha * grad / ||grad||_2`` per image, projection onto
    the L2 ball of radius ``eps`` and then clipping to [0, 1], :mod:`ddcat.attacks.norms`)."""

    eps: float = EPS
    alpha: float = ALPHA
    steps: int = 3
    targeted: bool = False
    precision: str = "fp32"
    norm: str = "linf"

    label: ClassVar[str] = "BIM"
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __post_init__(self) -> None:
        set_field(self, "eps", check_eps(self.eps))
        set_field(self, "alpha", check_alpha(self.alpha))
        set_field(self, "steps", check_count("steps", self.steps, 0))
        set_field(self, "targeted", bool(self.targeted))
        set_field(self, "precision", check_precision(self.precision))
        set_field(self, "norm", check_norm(self.norm, type(self).__name__))

    def sweep_key(self) -> Hashable | None:
        """BIM has no random start: BIM with n steps is the n-th iterate of a longer BIM, so one
        run per (eps, alpha, precision) serves every step count (:meth:`sweep`)."""
        return None if self.targeted else ("bim", self.eps, self.alpha, self.precision, self.norm)

    def _iterates(self, fwd: Forward, images: torch.Tensor, labels: torch.Tensor, steps: int):
        """x_1, x_2, ..., x_steps of eq. 2."""
        ball = Ball(self.norm, images, self.eps)
        x = images
        for _ in range(steps):
            _, _, grad = fwd.loss_and_grad(x, lambda logits: L.ce(logits, labels))
            x = ball.step(x, grad, self.alpha, self.targeted)
            yield x

    def _run(self, fwd, images, labels, score, seed):
        x = images.clone()
        for x in self._iterates(fwd, images, labels, self.steps):
            pass
        return x, None

    def sweep(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        steps: list[int],
        *,
        forward: ForwardFn | None = None,
    ) -> dict[int, torch.Tensor]:
        """BIM with every step count in ``steps`` for the price of the largest one.

        BIM has no random start, so BIM with n steps is the n-th iterate of BIM with more steps:
        ``sweep(..., [1..7])`` equals seven separate attacks and costs 7 steps instead of 28."""
        if not isinstance(model, torch.nn.Module):
            raise DdcatError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        images, labels = check_inputs(images, labels)
        wanted = sorted(set(int(n) for n in steps))
        if any(n < 0 for n in wanted):
            raise DdcatError(f"steps must be >= 0, got {wanted}")
        out = {0: images.clone()} if 0 in wanted else {}
        with eval_mode(model):
            fwd = Forward(forward if forward is not None else model, labels, self.precision)
            for n, x in enumerate(self._iterates(fwd, images, labels, max(wanted, default=0)), 1):
                if n in wanted:
                    out[n] = x.detach()
        return out


@dataclass(frozen=True)
class FGSM(BIM):
    """Fast gradient sign method, eq. 1: ``clip_[0,1](x + eps * sign(grad_x CE(f(x), y)))``.

    Identical to ``BIM(eps, alpha=eps, steps=1)``; one forward and one input-gradient backward.
    ``alpha`` and ``steps`` are fixed (not constructor arguments). ``norm="l2"``: the fast gradient
    method, ``x + eps * grad / ||grad||_2`` clipped to [0, 1]."""

    label: ClassVar[str] = "FGSM"

    eps: float = EPS
    alpha: float = EPS  # = eps, set in __init__
    steps: int = 1
    targeted: bool = False
    precision: str = "fp32"
    norm: str = "linf"

    def __init__(self, eps: float = EPS, targeted: bool = False, precision: str = "fp32", norm: str = "linf") -> None:
        set_field(self, "eps", check_eps(eps))
        set_field(self, "alpha", self.eps)  # may be 0 here (FGSM at eps 0 is the identity)
        set_field(self, "steps", 1)
        set_field(self, "targeted", bool(targeted))
        set_field(self, "precision", check_precision(precision))
        set_field(self, "norm", check_norm(norm, "FGSM"))

    def __repr__(self) -> str:
        extra = f", norm={self.norm!r}" if self.norm != "linf" else ""
        return f"FGSM(eps={self.eps!r}, targeted={self.targeted!r}, precision={self.precision!r}{extra})"


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent (Madry et al., 2018) with random start, restarts and best-iterate
    tracking, on any loss of :data:`ddcat.attacks.losses.LOSSES`.

    Threat model: L-inf ball of radius ``eps`` intersected with [0, 1], white-box; ``norm="l2"``:
    the L2 ball of radius ``eps`` per image (steps ``alpha * grad / ||grad||_2``, each iterate
    projected onto the L2 ball and then clipped to [0, 1] as the reference implementations do, the
    random start a random direction at distance ``eps``: :mod:`ddcat.attacks.norms`).
    Each restart starts uniformly in the eps-ball (``random_start=True``; drawn from a local
    ``torch.Generator`` seeded with ``seed``, on the CPU, so results do not depend on the device) or
    at the clean images, then takes ``steps`` sign steps of size ``alpha`` on ``loss``
    (``segpgd`` gets ``step = t``, ``total = steps``; ``balanced-masked-ce`` gets ``class_counts``).

    The result is, per image, the BEST iterate over all steps and restarts (the random starts
    included): the one with the fewest correctly classified valid pixels (targeted: the most
    pixels equal to the target). Ties are broken by the higher per-image cross-entropy to the labels
    (targeted: the lower cross-entropy to the target), whatever ``loss`` is, so that iterates stay
    comparable when the loss changes from step to step (SegPGD); on an exact tie the earlier iterate
    is kept. A call costs ``restarts * (steps + 1)`` forwards and ``restarts * steps``
    input-gradient backwards. Deterministic for a given ``seed``.
    """

    eps: float = EPS
    alpha: float = ALPHA
    steps: int = 10
    random_start: bool = True
    restarts: int = 1
    loss: str = "ce"
    targeted: bool = False
    seed: int = 0
    precision: str = "fp32"
    class_counts: tuple[float, ...] | None = None
    norm: str = "linf"

    label: ClassVar[str] = "PGD"
    randomized: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __post_init__(self) -> None:
        set_field(self, "eps", check_eps(self.eps))
        set_field(self, "alpha", check_alpha(self.alpha))
        set_field(self, "steps", check_count("steps", self.steps, 0))
        set_field(self, "norm", check_norm(self.norm, "PGD"))
        set_field(self, "random_start", bool(self.random_start))
        set_field(self, "restarts", check_count("restarts", self.restarts, 1))
        set_field(self, "targeted", bool(self.targeted))
        set_field(self, "loss", L.loss_name(self.loss, self.targeted))
        set_field(self, "seed", check_seed(self.seed))
        set_field(self, "precision", check_precision(self.precision))
        set_field(self, "class_counts", check_class_counts(self.class_counts))

    @property
    def starts_at_clean(self) -> bool:
        return not (self.random_start and self.eps > 0)

    @property
    def needs_class_counts(self) -> bool:
        return self.loss == "balanced-masked-ce"

    def _run(self, fwd, images, labels, score, seed):
        if self.steps == 0:
            return images.clone(), None
        ball = Ball(self.norm, images, self.eps)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        loss_fn = L.LOSSES[self.loss]
        best_x: torch.Tensor | None = None
        best: Score | None = None
        for _ in range(self.restarts):
            x = images if self.starts_at_clean else ball.start(gen)
            for t in range(1, self.steps + 1):
                logits, _, grad = fwd.loss_and_grad(
                    x,
                    lambda z, t=t: loss_fn(
                        z, labels, step=t, total=self.steps, class_counts=self.class_counts, targeted=self.targeted
                    ),
                )
                best_x, best = keep_better(best_x, best, x, Score.of(logits, labels, self.targeted))
                x = ball.step(x, grad, self.alpha, self.targeted)
            best_x, best = keep_better(best_x, best, x, Score.of(fwd.no_grad_logits(x), labels, self.targeted))
        assert best_x is not None
        return best_x, best


def _pgd_on(loss: str, name: str, doc: str):
    """A constructor of :class:`PGD` with ``loss`` fixed (untargeted), named ``name``."""

    def make(
        eps: float = EPS,
        alpha: float = ALPHA,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        seed: int = 0,
        precision: str = "fp32",
        norm: str = "linf",
    ) -> PGD:
        return PGD(eps, alpha, steps, random_start, restarts, loss, False, seed, precision, norm=norm)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = doc
    return make


SegPGD = _pgd_on(
    "segpgd",
    "SegPGD",
    """SegPGD (Gu et al., 2022): :class:`PGD` on the CE weighted ``1 - lambda_t`` on correctly
    classified pixels and ``lambda_t`` on wrong ones, ``lambda_t = (t - 1) / (2T)``
    (``loss="segpgd"``). Untargeted.""",
)
CosPGD = _pgd_on(
    "cospgd",
    "CosPGD",
    """CosPGD (Agnihotri & Keuper, 2023): :class:`PGD` on the per-pixel CE weighted by the
    detached cosine similarity between ``softmax(logits)`` and the one-hot label
    (``loss="cospgd"``). Untargeted.""",
)
