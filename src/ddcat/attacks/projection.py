"""Projection onto the L-inf eps-ball around the clean images, intersected with [0, 1].

The bounds are rounded *inwards*, so that ``(adv - x0).abs() <= eps`` holds exactly after float
rounding -- whether the check is done in the images' dtype (the usual ``tensor <= eps`` in torch) or
in float64 -- and ``0 <= adv <= 1`` holds exactly too. A naive ``clamp(x, x0 - eps, x0 + eps)``
can overshoot by half an ulp of ``x0 - eps``.
"""

from __future__ import annotations

import torch

from ddcat.attacks.checks import check_eps
from ddcat.errors import DdcatError

__all__ = ["ball_bounds", "project", "project_with_bounds"]


def ball_bounds(x0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (dtype of ``x0``) of the eps-ball around ``x0`` intersected with [0, 1].

    Every value ``v`` in ``[lower, upper]`` satisfies ``|v - x0| <= eps`` exactly (in the dtype of
    ``x0`` and in float64) and ``0 <= v <= 1``. ``x0`` itself lies in the interval when it lies in
    [0, 1].
    """
    eps = check_eps(eps)
    dtype = x0.dtype
    if not dtype.is_floating_point:
        raise DdcatError(f"images must be a floating-point tensor, got dtype {dtype}")
    up = torch.tensor(float("inf"), dtype=dtype, device=x0.device)
    down = -up
    if dtype == torch.float64 or x0.device.type == "mps":
        # No wider type at hand: round in the own dtype and step inwards where that overshot.
        lo = x0 - eps
        lo = torch.where(x0 - lo > eps, torch.nextafter(lo, up), lo)
        hi = x0 + eps
        hi = torch.where(hi - x0 > eps, torch.nextafter(hi, down), hi)
    else:
        # float32/16: x0 -/+ eps is exact in float64; round it to the dtype, then step inwards
        # where rounding went outwards, so the exact distance to x0 is <= eps.
        wide = x0.double()
        lo64 = wide - eps
        hi64 = wide + eps
        lo = lo64.to(dtype)
        lo = torch.where(lo.double() < lo64, torch.nextafter(lo, up), lo)
        hi = hi64.to(dtype)
        hi = torch.where(hi.double() > hi64, torch.nextafter(hi, down), hi)
    lo = lo.clamp(min=0.0)
    hi = hi.clamp(max=1.0)
    return lo, hi


def project_with_bounds(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Clamp ``x`` elementwise into ``[lower, upper]`` (bounds from :func:`ball_bounds`)."""
    return torch.clamp(x, min=lower, max=upper)


def project(x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip ``x`` to the L-inf ``eps``-ball around ``x0``, then to [0, 1].

    For ``x0`` in [0, 1] the result ``r`` satisfies ``(r - x0).abs() <= eps`` and
    ``0 <= r <= 1`` exactly (see the module docstring). Raises :class:`DdcatError` for a
    negative or non-finite ``eps`` and for shapes that do not match.
    """
    if x.shape != x0.shape:
        raise DdcatError(f"project: x shape {tuple(x.shape)} does not match x0 shape {tuple(x0.shape)}")
    lower, upper = ball_bounds(x0.detach(), eps)
    return project_with_bounds(x.to(x0.dtype), lower, upper)
