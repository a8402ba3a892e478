"""Gradient-sign attacks: FGSM (eq. 1), BIM (eq. 2), PGD and its SegPGD / CosPGD variants.

Every attack is a callable ``adv = attack(model, images, labels)``:

* ``images``: ``(N, C, H, W)`` floats in [0, 1]; ``labels``: ``(N, H, W)`` integers, 255 = ignore
  (ignored pixels contribute nothing to any loss); the model maps images to logits ``(N, K, H, W)``.
* Guarantees, exactly: ``(adv - images).abs() <= eps`` and ``0 <= adv <= 1``; ``adv`` is detached.
* The model runs in eval mode during the attack and gets each module's previous mode back
  afterwards (also on exceptions). Gradients are taken with ``torch.autograd.grad`` with respect to
  the input only: no parameter, parameter ``.grad`` or buffer changes.
* Cost: one step = one forward and one input-gradient backward of ``model(x)``. FGSM and BIM do
  nothing else; PGD (and SegPGD, CosPGD) adds one no-grad forward per restart to score the last
  iterate (the forward of step ``t + 1`` scores iterate ``t``).
* ``steps == 0`` returns the clean images (no forward at all).
* ``precision="fp32"`` (default) runs the attack forwards with autocast disabled;
  ``precision="autocast"`` leaves the caller's autocast context as it is. The loss is always
  computed from ``logits.float()``.
"""

from __future__ import annotations

from typing import Callable

import torch

from ddcat.attacks import losses as L
from ddcat.attacks._core import (
    Forward,
    Score,
    check_alpha,
    check_count,
    check_eps,
    check_inputs,
    check_precision,
    eval_mode,
    keep_better,
)
from ddcat.attacks.projection import ball_bounds, project_with_bounds
from ddcat.errors import DdcatError

__all__ = ["Attack", "FGSM", "BIM", "PGD", "SegPGD", "CosPGD"]



class Attack:
    """Base class: validates the inputs, handles eval mode, and defines the call protocol.

    Subclasses implement :meth:`_run`, which returns the adversarial images and, when asked, their
    per-image :class:`~ddcat.attacks._core.Score` (used by :class:`~ddcat.attacks.WorstCase`)."""

    eps: float
    steps: int
    targeted: bool = False
    precision: str = "fp32"

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv, _ = self.run(model, images, labels, score=False)
        return adv

    def run(
        self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, score: bool = False
    ) -> tuple[torch.Tensor, Score | None]:
        """Attack and, with ``score=True``, also return the per-image score of the result (this may
        cost one extra no-grad forward for attacks that do not track it anyway)."""
        if not isinstance(model, torch.nn.Module):
            raise DdcatError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        images, labels = check_inputs(images, labels)
        with eval_mode(model):
            fwd = Forward(model, labels, self.precision)
            adv, sc = self._run(fwd, images, labels, score)
            if score and sc is None:
                sc = fwd.score(adv, self.targeted)
        return adv.detach(), sc

    def _run(
        self, fwd: Forward, images: torch.Tensor, labels: torch.Tensor, score: bool
    ) -> tuple[torch.Tensor, Score | None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _sign_step(x: torch.Tensor, grad: torch.Tensor, alpha: float, targeted: bool) -> torch.Tensor:
    step = alpha * grad.sign()
    return x - step if targeted else x + step


class BIM(Attack):
    """Basic iterative method, eq. 2 of the paper: ``x_0 = x``,
    ``x_{t+1} = clip_[0,1](clip_eps(x_t + alpha * sign(grad_x CE(f(x_t), y))))``; no random start.

    ``targeted=True``: ``labels`` are target labels and each step descends the CE. Cost: exactly
    ``steps`` forwards and input-gradient backwards, nothing else."""

    def __init__(
        self,
        eps: float = 0.03,
        alpha: float = 0.01,
        steps: int = 3,
        targeted: bool = False,
        precision: str = "fp32",
    ) -> None:
        self.eps = check_eps(eps)
        self.alpha = check_alpha(alpha)
        self.steps = check_count("steps", steps, 0)
        self.targeted = bool(targeted)
        self.precision = check_precision(precision)

    def _iterates(self, fwd, images, labels):
        """x_1, x_2, ..., x_steps of eq. 2."""
        lower, upper = ball_bounds(images, self.eps)
        x = images
        for _ in range(self.steps):
            _, grad = fwd.loss_and_grad(x, lambda logits: L.ce_loss(logits, labels))
            x = project_with_bounds(_sign_step(x, grad, self.alpha, self.targeted), lower, upper)
            yield x

    def _run(self, fwd, images, labels, score):
        x = images.clone()
        for x in self._iterates(fwd, images, labels):
            pass
        return x, None

    def sweep(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: list[int]) -> dict[int, torch.Tensor]:
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
        longest = BIM(self.eps, self.alpha, max(wanted, default=0), self.targeted, self.precision)
        with eval_mode(model):
            fwd = Forward(model, labels, self.precision)
            for n, x in enumerate(longest._iterates(fwd, images, labels), 1):
                if n in wanted:
                    out[n] = x.detach()
        return out


class FGSM(BIM):
    """Fast gradient sign method, eq. 1: ``clip_[0,1](x + eps * sign(grad_x CE(f(x), y)))``.

    Identical to ``BIM(eps, alpha=eps, steps=1)``; one forward and one input-gradient backward."""

    def __init__(self, eps: float = 0.03, targeted: bool = False, precision: str = "fp32") -> None:
        # Not BIM.__init__: alpha = eps may be 0 here (FGSM at eps 0 is the identity).
        self.eps = check_eps(eps)
        self.alpha = self.eps
        self.steps = 1
        self.targeted = bool(targeted)
        self.precision = check_precision(precision)

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps!r}, targeted={self.targeted!r}, precision={self.precision!r})"


class PGD(Attack):
    """Projected gradient descent with random start, restarts and best-iterate tracking.

    Each restart starts uniformly in the eps-ball (``random_start=True``; drawn from a local
    ``torch.Generator`` seeded with ``seed``, on the CPU, so results do not depend on the device) or
    at the clean images, then takes ``steps`` sign steps of size ``alpha`` on ``loss``:

    * ``"ce"``: cross-entropy; ``"masked_ce"``: CE on the pixels still classified correctly;
      ``"js"``: Jensen-Shannon divergence to the one-hot label;
      ``"segpgd"``, ``"cospgd"``: see :class:`SegPGD`, :class:`CosPGD` (untargeted only).

    The result is, per image, the BEST iterate over all steps and restarts (the random starts
    included): the one with the fewest correctly classified valid pixels (targeted: the most
    pixels equal to the target). Ties are broken by the higher per-image cross-entropy to the labels
    (targeted: the lower cross-entropy to the target), whatever ``loss`` is, so that iterates stay
    comparable when the loss changes from step to step (SegPGD); on an exact tie the earlier iterate
    is kept. The forward of step ``t + 1`` scores iterate ``t``; one extra no-grad forward per
    restart scores the last iterate, so a call costs ``restarts * (steps + 1)`` forwards and
    ``restarts * steps`` input-gradient backwards. Deterministic for a given ``seed``.
    """

    def __init__(
        self,
        eps: float = 0.03,
        alpha: float = 0.01,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        targeted: bool = False,
        seed: int = 0,
        precision: str = "fp32",
    ) -> None:
        self.eps = check_eps(eps)
        self.alpha = check_alpha(alpha)
        self.steps = check_count("steps", steps, 0)
        self.random_start = bool(random_start)
        self.restarts = check_count("restarts", restarts, 1)
        name = str(loss).lower().replace("-", "_")
        if name not in L.LOSSES:
            raise DdcatError(f"unknown PGD loss {loss!r}; valid losses: {', '.join(L.LOSSES)}")
        if targeted and name in ("segpgd", "cospgd"):
            raise DdcatError(f"loss {name!r} supports untargeted attacks only (targeted=True given)")
        self.loss = name
        self.targeted = bool(targeted)
        self.seed = check_count("seed", seed, 0)
        self.precision = check_precision(precision)

    def _loss(self, labels: torch.Tensor, t: int) -> Callable[[torch.Tensor], torch.Tensor]:
        T = self.steps
        if self.loss == "ce":
            return lambda logits: L.ce_loss(logits, labels)
        if self.loss == "masked_ce":
            return lambda logits: L.masked_ce_loss(logits, labels, targeted=self.targeted)
        if self.loss == "js":
            return lambda logits: L.js_loss(logits, labels)
        if self.loss == "segpgd":
            return lambda logits: L.segpgd_loss(logits, labels, t, T)
        return lambda logits: L.cospgd_loss(logits, labels)

    def _run(self, fwd, images, labels, score):
        if self.steps == 0:
            return images.clone(), None
        lower, upper = ball_bounds(images, self.eps)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed)
        best_x: torch.Tensor | None = None
        best: Score | None = None

        for _ in range(self.restarts):
            if self.random_start and self.eps > 0:
                noise = torch.rand(images.shape, generator=gen, dtype=torch.float32)
                noise = (noise * 2.0 - 1.0).mul_(self.eps).to(device=images.device, dtype=images.dtype)
                x = project_with_bounds(images + noise, lower, upper)
            else:
                x = images
            for t in range(1, self.steps + 1):
                logits, grad = fwd.loss_and_grad(x, self._loss(labels, t))
                best_x, best = keep_better(best_x, best, x, Score.of(logits, labels, self.targeted))
                x = project_with_bounds(_sign_step(x, grad, self.alpha, self.targeted), lower, upper)
            best_x, best = keep_better(best_x, best, x, fwd.score(x, self.targeted))
        assert best_x is not None
        return best_x, best


class SegPGD(PGD):
    """SegPGD (Gu et al., 2022): PGD on the CE weighted ``1 - lambda_t`` on correctly classified
    pixels and ``lambda_t`` on wrong ones, ``lambda_t = (t - 1) / (2T)``; best iterate kept as in
    :class:`PGD`. Untargeted."""

    def __init__(
        self,
        eps: float = 0.03,
        alpha: float = 0.01,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        seed: int = 0,
        precision: str = "fp32",
    ) -> None:
        super().__init__(eps, alpha, steps, random_start, restarts, "segpgd", False, seed, precision)


class CosPGD(PGD):
    """CosPGD (Agnihotri & Keuper, 2023): PGD on the per-pixel CE weighted by the detached cosine
    similarity between ``softmax(logits)`` and the one-hot label; best iterate kept as in
    :class:`PGD`. Untargeted."""

    def __init__(
        self,
        eps: float = 0.03,
        alpha: float = 0.01,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        seed: int = 0,
        precision: str = "fp32",
    ) -> None:
        super().__init__(eps, alpha, steps, random_start, restarts, "cospgd", False, seed, precision)
