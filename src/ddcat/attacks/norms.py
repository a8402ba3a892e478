"""Threat models of the attacks: the L-inf and the L2 ball around the clean images, within [0, 1].

``norm="linf"``: ``|adv - x|_inf <= eps`` elementwise; steps along ``sign(grad)``; the exact
projection of :mod:`ddcat.attacks.projection` (bounds rounded inwards).

``norm="l2"``: ``||adv_i - x_i||_2 <= eps`` per image ``i`` (the norm over all ``C * H * W``
values of the image), eps in pixel units of [0, 1] images (0.25 and 0.5 are the usual budgets).
Steps go along ``grad_i / ||grad_i||_2`` per image. The projection is the one of the reference
implementations (Croce & Hein's APGD-L2 in ``autoattack``, the ``cospgd`` package,
torchattacks' PGDL2): scale ``delta = x - x0`` onto the ball (``delta * min(1, eps / ||delta||_2)``),
THEN clip ``x0 + delta`` to [0, 1]. This is not the Euclidean projection onto the intersection of
the ball and the box, but clipping only moves values towards ``x0`` (``x0`` lies in [0, 1]), so the
result lies in the ball and in the box. After float rounding ddcat checks the distance in float64
and moves the few values that rounding pushed outside one ulp towards ``x0`` until
``||adv_i - x_i||_2 <= eps`` holds exactly in float64 (the extra work is a norm per image).

Shapes: images ``(N, C, H, W)``; per-image norms ``(N,)``.
"""

from __future__ import annotations

import torch

from ddcat.attacks.checks import check_eps
from ddcat.attacks.projection import ball_bounds, project_with_bounds
from ddcat.errors import DdcatError

__all__ = [
    "NORMS",
    "check_norm",
    "l2_norms",
    "l2_normalize",
    "project_l2",
    "l2_random_start",
    "linf_random_start",
    "Ball",
]

#: The threat models: names as the command line and the records spell them.
NORMS = ("linf", "l2")
#: How reports write a norm ("L-inf, eps 0.03", "L2, eps 0.5").
NORM_LABELS = {"linf": "L-inf", "l2": "L2"}

_TINY = 1e-12  # the reference implementations' guard against a zero gradient / perturbation


def check_norm(norm: object, attack: str, supported: tuple[str, ...] = NORMS) -> str:
    """``norm`` canonical ("linf" / "l2"; "Linf", "inf" and "L2" accepted); a one-line error naming
    the attack and the norm when the attack does not support it."""
    key = str(norm).strip().lower().replace("-", "")
    key = {"inf": "linf", "linfinity": "linf"}.get(key, key)
    if key not in NORMS:
        raise DdcatError(f"unknown norm {norm!r} for attack {attack!r}; valid norms: {', '.join(NORMS)}")
    if key not in supported:
        raise DdcatError(f"attack {attack!r} does not support norm {key!r} (supported: {', '.join(supported)})")
    return key


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float64 where the device has it (MPS has not: float32 there)."""
    return t.float() if t.device.type == "mps" else t.double()


def l2_norms(t: torch.Tensor) -> torch.Tensor:
    """``(N,)`` L2 norm of each image of ``t`` ``(N, ...)``, computed in float64."""
    return _flat(_wide(t)).norm(dim=1)


def _per_image(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def l2_normalize(grad: torch.Tensor) -> torch.Tensor:
    """``grad_i / max(||grad_i||_2, 1e-12)`` per image (the L2 steepest-ascent direction)."""
    norm = l2_norms(grad).clamp_min(_TINY).to(grad.dtype)
    return grad / _per_image(norm, grad)


def project_l2(x: torch.Tensor, x0: torch.Tensor, eps: float, x0_wide: torch.Tensor | None = None) -> torch.Tensor:
    """``clip_[0,1](x0 + delta * min(1, eps / ||delta||_2))`` with ``delta = x - x0``, per image
    (see the module docstring); afterwards ``||r_i - x0_i||_2 <= eps`` exactly in float64 and
    ``0 <= r <= 1``. ``x0`` must lie in [0, 1]; ``x0_wide``: ``x0`` in float64 if the caller has
    it (an attack projects onto one ball many times)."""
    eps = check_eps(eps)
    if x.shape != x0.shape:
        raise DdcatError(f"project_l2: x shape {tuple(x.shape)} does not match x0 shape {tuple(x0.shape)}")
    x0 = x0.detach()
    x0w = _wide(x0) if x0_wide is None else x0_wide
    delta = _wide(x) - x0w
    norm = _flat(delta).norm(dim=1)
    factor = torch.where(norm > eps, eps / norm.clamp_min(_TINY), torch.ones_like(norm))
    r = (x0w + delta * _per_image(factor, delta)).clamp(0.0, 1.0).to(x0.dtype)
    return _shrink(r, x0, x0w, eps)


def _shrink(r: torch.Tensor, x0: torch.Tensor, x0w: torch.Tensor, eps: float) -> torch.Tensor:
    """Step the values of the images that rounding left outside the ball one ulp towards ``x0``
    until ``||r_i - x0_i||_2 <= eps`` in the wide type."""
    for _ in range(64):
        over = _flat(_wide(r) - x0w).norm(dim=1) > eps
        if not bool(over.any()):
            return r
        r = torch.where(_per_image(over, r), torch.nextafter(r, x0), r)
    return torch.where(_per_image(_flat(_wide(r) - x0w).norm(dim=1) > eps, r), x0, r)  # never reached in practice


def linf_random_start(
    images: torch.Tensor, eps: float, lower: torch.Tensor, upper: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """A point drawn uniformly from the L-inf eps-ball around ``images`` (on the CPU generator
    ``gen``, so results do not depend on the device), projected onto ``[lower, upper]``."""
    noise = torch.rand(images.shape, generator=gen, dtype=torch.float32)
    noise = (noise * 2.0 - 1.0).mul_(eps).to(device=images.device, dtype=images.dtype)
    return project_with_bounds(images + noise, lower, upper)


def l2_random_start(images: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """``project_l2(images + eps * t / ||t||_2)``, ``t`` standard normal per image (drawn on the
    CPU generator ``gen``): a random direction at distance eps, then clipped to [0, 1], as APGD-L2's
    random start (Croce & Hein 2020)."""
    t = torch.randn(images.shape, generator=gen, dtype=torch.float32).to(device=images.device, dtype=images.dtype)
    return project_l2(images + eps * l2_normalize(t), images, eps)


class Ball:
    """The threat model of one attack on one batch: radius ``eps`` around ``x0`` in ``norm``,
    intersected with [0, 1]. ``project(x)``, ``step(x, grad, alpha, descend)``, ``start(gen)`` and
    ``subset(index)`` (the ball of some of the images)."""

    def __init__(
        self,
        norm: str,
        x0: torch.Tensor,
        eps: float,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        wide: torch.Tensor | None = None,
    ) -> None:
        self.norm, self.x0, self.eps = norm, x0, float(eps)
        if norm == "linf":
            self.lower, self.upper = bounds if bounds is not None else ball_bounds(x0, eps)
        else:
            self.x0_wide = _wide(x0.detach()) if wide is None else wide

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return project_with_bounds(x.to(self.x0.dtype), self.lower, self.upper)
        return project_l2(x.to(self.x0.dtype), self.x0, self.eps, self.x0_wide)

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit steepest-ascent direction of the norm: ``sign(grad)`` (L-inf) or
        ``grad / ||grad||_2`` per image (L2)."""
        return grad.sign() if self.norm == "linf" else l2_normalize(grad)

    def step(self, x: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor | float, descend: bool = False) -> torch.Tensor:
        """``project(x +- alpha * direction(grad))`` (minus for a targeted attack)."""
        move = alpha * self.direction(grad)
        return self.project(x - move if descend else x + move)

    def start(self, gen: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            return linf_random_start(self.x0, self.eps, self.lower, self.upper, gen)
        return l2_random_start(self.x0, self.eps, gen)

    def subset(self, index: torch.Tensor) -> "Ball":
        if self.norm == "linf":
            return Ball("linf", self.x0[index], self.eps, (self.lower[index], self.upper[index]))
        return Ball("l2", self.x0[index], self.eps, wide=self.x0_wide[index])
