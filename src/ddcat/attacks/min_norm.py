"""What the minimum-norm attacks (DAG, PDPGD, ALMA-prox) share: the two ways of running them under an
L-inf budget, their margins, their proximal operators and the common base class.

A minimum-norm attack looks for the *smallest* perturbation that fools (at least ``adv_threshold``,
99 %, of) an image's labelled pixels; it has no budget of its own. Halmosi, Mohos & Jelasity (ECCV
2024, package ``rse``) run DAG, PDPGD and ALMA-prox (adv-lib 0.2.8) in their ensemble at a budget
``eps`` by clipping the attack's result to the eps-box afterwards. ddcat offers both:

* ``box="clip"`` (rse's protocol): the attack runs as adv-lib runs it, unconstrained in the eps sense
  (only [0, 1]), and returns what adv-lib returns (the first / smallest-norm iterate that fools
  ``adv_threshold`` of the labelled pixels; before any success the iterate that fooled the most);
  that image is then clipped to the eps-box (and [0, 1]) without re-optimisation. A perturbation
  found at L-inf norm ``> eps`` usually loses most of its effect when clipped.
* ``box="project"`` (ddcat's default): every iterate is restricted to the eps-box intersected with
  [0, 1] during the run (DAG: the perturbation is clipped to [-eps, eps] after each step; PDPGD and
  ALMA-prox: their projections / proximal operators use the box's bounds instead of [0, 1]'s), and
  the result is, per image, the evaluated iterate with the fewest correctly classified labelled
  pixels (ties: the higher CE; :class:`~ddcat.attacks.scoring.Score`), as for every other ddcat
  attack. Same cost as ``clip`` (the same iterations). Why the default: it leaves lower accuracy at
  the same budget (``benchmarks/bench_min_norm.py`` measures both on a small trained model).

Both modes: images are in [0, 1], ``eps`` in the same units, labels ``(N, H, W)`` with 255 = ignore
(the labelled pixels are adv-lib's ``masks``); a pixel counts as fooled when its prediction differs
from its label (DAG: when its margin ``z_y - max_{k != y} z_k`` is negative). An image without any
labelled pixel is returned unchanged and costs nothing. Untargeted only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ddcat.attacks.base import Attack, set_field
from ddcat.attacks.checks import check_count, check_eps, check_precision
from ddcat.attacks.projection import ball_bounds, project_with_bounds
from ddcat.attacks.scoring import Score
from ddcat.constants import EPS, IGNORE_INDEX
from ddcat.errors import DdcatError

__all__ = [
    "BOXES",
    "MinNormAttack",
    "BestScore",
    "MinNormBest",
    "check_positive",
    "check_fraction",
    "difference_of_logits",
    "difference_of_logits_ratio",
    "fooled_fraction",
    "inside",
    "simplex_projection",
    "l1_ball_projection",
    "prox_linf",
    "prox_linf_box",
    "softmax_plus_one",
]

#: ``clip``: rse's protocol (run unconstrained, clip the result); ``project``: iterates kept in the box.
BOXES = ("clip", "project")


# ----------------------------------------------------------------------------- checks


def check_positive(name: str, value: object) -> float:
    """A finite number > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or not float(value) > 0:
        raise DdcatError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_fraction(name: str, value: object, *, open_lo: bool = True, open_hi: bool = False) -> float:
    """A number in (0, 1] (``open_lo`` / ``open_hi`` choose which ends are excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DdcatError(f"{name} must be a number in {'(' if open_lo else '['}0, 1{')' if open_hi else ']'}, got {value!r}")
    v = float(value)
    ok = (v > 0 if open_lo else v >= 0) and (v < 1 if open_hi else v <= 1)
    if not ok:
        raise DdcatError(f"{name} must be a number in {'(' if open_lo else '['}0, 1{')' if open_hi else ']'}, got {value!r}")
    return v


def check_box(box: object) -> str:
    if box not in BOXES:
        raise DdcatError(f"box must be one of {', '.join(BOXES)}, got {box!r}")
    return str(box)


# ----------------------------------------------------------------------------- margins


def difference_of_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel margin ``z_y - max_{k != y} z_k``: ``(N, K, H, W)``, labels ``(N, H, W)`` in
    [0, K) (ignored pixels mapped to any class first) -> ``(N, H, W)``; negative = fooled."""
    y = labels.unsqueeze(1)
    own = logits.gather(1, y).squeeze(1)
    others = logits.scatter(1, y, float("-inf")).amax(dim=1)
    return own - others


def difference_of_logits_ratio(logits: torch.Tensor, labels: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """adv-lib's untargeted DLR for ALMA-prox: ``(z_y - max_{k != y} z_k + tolerance) / (z_(1) - z_(3)
    + 1e-8)`` per pixel, ``z_(j)`` the j-th largest logit (Croce & Hein 2020's DLR, with a
    denominator that keeps the ratio positive exactly when the pixel is correct). Needs ``K >= 3``."""
    top3 = logits.topk(3, dim=1).values
    return (difference_of_logits(logits, labels) + tolerance) / (top3[:, 0] - top3[:, -1] + 1e-8)


def fooled_fraction(fooled: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(N,)`` share of each image's labelled pixels that are fooled (``counts`` = labelled pixels)."""
    return (fooled & valid).flatten(1).sum(dim=1) / counts


def softmax_plus_one(t: torch.Tensor) -> torch.Tensor:
    """Softmax over each image's flattened entries with one extra zero logit:
    ``exp(t_j) / (1 + sum_i exp(t_i))`` (PDPGD's dual variables; the extra entry is the norm's weight)."""
    flat = F.pad(t.flatten(1), (1, 0), value=0.0)
    return flat.softmax(dim=1)[:, 1:].view_as(t)


# ----------------------------------------------------------------------------- proximal operators


def simplex_projection(v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` ``(N, D)``, ``v >= 0``, onto the simplex
    ``{u >= 0, sum u = radius}`` (``radius`` ``(N,)``), by sorting (Duchi et al., ICML 2008)."""
    u = v.sort(dim=1, descending=True).values
    ranks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    theta = (u.cumsum(dim=1) - radius.unsqueeze(1)) / ranks
    last = ((theta < u).long() * torch.arange(v.shape[1], device=v.device)).amax(dim=1, keepdim=True)
    return (v - theta.gather(1, last)).clamp(min=0)


def l1_ball_projection(v: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` ``(N, D)`` onto ``{u : ||u||_1 <= radius}``; rows
    already inside are returned unchanged."""
    radius = torch.as_tensor(radius, dtype=v.dtype, device=v.device).expand(v.shape[0])
    outside = v.abs().sum(dim=1) > radius
    if not bool(outside.any()):
        return v
    out = v.clone()
    out[outside] = simplex_projection(v[outside].abs(), radius[outside]).copysign(v[outside])
    return out


def prox_linf(v: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``prox_{mu ||.||_inf}(v) = v - mu P_{||.||_1 <= 1}(v / mu)`` per image (Moreau decomposition):
    ``v`` ``(N, ...)``, ``mu`` ``(N,)`` > 0."""
    m = mu.view(-1, *([1] * (v.dim() - 1)))
    return v - m * l1_ball_projection((v / m).flatten(1), 1.0).view_as(v)


def prox_linf_box(v: torch.Tensor, lam: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Exact ``argmin_u 1/2 sum_j h_j (u_j - v_j)^2 + lam ||u||_inf`` subject to ``lower <= u <= upper``
    (``lower <= 0 <= upper``), per image: ``v``, ``lower``, ``upper``, ``h`` > 0 ``(N, ...)``, ``lam``
    ``(N,)`` >= 0. ALMA-prox's proximal step.

    For a norm ``t`` the best ``u`` is ``clamp(p, -t, t)`` with ``p = clamp(v, lower, upper)``; the
    objective in ``t``, ``f(t) = sum_j h_j (clamp(p_j, -t, t) - v_j)^2 + 2 lam t``, is convex and
    quadratic between consecutive sorted ``|p_j|``; its minimiser on each piece is
    ``clamp((sum_S h |v| - lam) / sum_S h, piece)`` (``S`` the coordinates with ``|p_j| > t``), and the
    best piece is taken (computed in float64 by sorting and cumulative sums). adv-lib's
    ``prox_linf_indicator`` finds the same ``t`` by a ternary search to 1e-6, with the number of
    search steps set by the largest ``|p|`` of the batch."""
    shape = v.shape
    p = torch.clamp(v, lower, upper)
    a = p.flatten(1).abs().double()
    b = v.flatten(1).abs().double()
    w = h.flatten(1).double()
    a_sorted, order = a.sort(dim=1, descending=True)
    b_sorted, w_sorted = b.gather(1, order), w.gather(1, order)
    c_h = w_sorted.cumsum(dim=1)
    c_hb = (w_sorted * b_sorted).cumsum(dim=1)
    c_hb2 = (w_sorted * b_sorted.square()).cumsum(dim=1)
    rest = (w_sorted * (a_sorted - b_sorted).square()).flip(1).cumsum(dim=1).flip(1)  # sum over j >= m
    rest = F.pad(rest[:, 1:], (0, 1), value=0.0)  # sum over j > m
    lo = F.pad(a_sorted[:, 1:], (0, 1), value=0.0)
    lam64 = lam.double().unsqueeze(1)
    t = torch.minimum(torch.maximum((c_hb - lam64) / c_h, lo), a_sorted)
    f = t.square() * c_h - 2 * t * c_hb + c_hb2 + rest + 2 * lam64 * t
    best = t.gather(1, f.argmin(dim=1, keepdim=True)).to(v.dtype)
    best = best.view(-1, *([1] * (len(shape) - 1)))
    return torch.clamp(p, -best, best)


def inside(x_adv: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, box: str) -> torch.Tensor:
    """The point a forward sees: ``box="project"``: ``x_adv`` clamped to the exact bounds (its own
    rounding can put ``x + delta`` one ulp outside them) with the gradient passed through unchanged;
    ``"clip"``: ``x_adv`` itself, as adv-lib forwards it."""
    if box != "project":
        return x_adv
    return x_adv + (torch.clamp(x_adv, lower, upper) - x_adv).detach()


# ----------------------------------------------------------------------------- result trackers


class BestScore:
    """``box="project"``: per image the evaluated iterate with the best :class:`Score` (fewest
    correct labelled pixels, ties: higher CE; the earlier one on exact ties)."""

    def __init__(self, images: torch.Tensor) -> None:
        n = images.shape[0]
        self.x = images.clone()
        self.score = Score(
            torch.full((n,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=images.device),
            torch.full((n,), float("-inf"), dtype=torch.float32, device=images.device),
        )

    def update(self, idx: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        sc = Score.of(logits, labels, targeted=False)
        better = sc.better_than(self.score[idx])
        self.x[idx[better]] = x.detach()[better]
        self.score.bad[idx[better]] = sc.bad[better]
        self.score.objective[idx[better]] = sc.objective[better]


class MinNormBest:
    """adv-lib's rule (PDPGD, ALMA-prox) for the iterate it returns: once an image is adversarial
    (fooled share >= ``threshold``), the adversarial iterate of smallest norm (``<=``: the later one
    on ties); before, the iterate whose fooled share is at least the best so far (capped at the
    threshold). Initially the clean image."""

    def __init__(self, images: torch.Tensor, threshold: float) -> None:
        n = images.shape[0]
        self.threshold = threshold
        self.x = images.clone()
        self.dist = torch.full((n,), float("inf"), device=images.device)
        self.fraction = torch.zeros(n, device=images.device)
        self.found = torch.zeros(n, dtype=torch.bool, device=images.device)

    def update(self, x: torch.Tensor, dist: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        """Take the iterate ``x`` where it is better; return which images are adversarial now."""
        is_adv = fraction >= self.threshold
        better = ((dist <= self.dist) & is_adv) | (~self.found & (fraction >= self.fraction.clamp_max(self.threshold)))
        self.found |= is_adv
        self.dist = torch.where(better, dist, self.dist)
        self.fraction = torch.where(better, fraction, self.fraction)
        self.x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x.detach(), self.x)
        return is_adv


# ----------------------------------------------------------------------------- base class


@dataclass(frozen=True)
class MinNormAttack(Attack):
    """Base of DAG, PDPGD and ALMA-prox: the fields they share and the two budget modes (module
    docstring). Subclasses implement :meth:`_attack` on images that all have labelled pixels."""

    eps: float = EPS
    steps: int = 500
    adv_threshold: float = 0.99
    box: str = "project"
    precision: str = "fp32"

    targeted = False  # class attribute: untargeted only
    budget: ClassVar[str] = "iters"
    randomized: ClassVar[bool] = False

    def __post_init__(self) -> None:
        set_field(self, "eps", check_eps(self.eps))
        set_field(self, "steps", check_count("steps", self.steps, 0))
        set_field(self, "adv_threshold", check_fraction("adv_threshold", self.adv_threshold))
        set_field(self, "box", check_box(self.box))
        set_field(self, "precision", check_precision(self.precision))

    def _run(self, fwd, images, labels, score, seed):
        valid = labels != IGNORE_INDEX
        counts = valid.flatten(1).sum(dim=1)
        attacked = (counts > 0).nonzero().squeeze(1)
        if self.steps == 0 or attacked.numel() == 0:
            return images.clone(), None
        x, y, v, c = images[attacked], labels[attacked], valid[attacked], counts[attacked]
        if self.box == "project":
            lower, upper = ball_bounds(x, self.eps)
        else:
            lower, upper = torch.zeros_like(x), torch.ones_like(x)
        result = self._attack(fwd, x, y, v, c, lower, upper)
        # clip: rse's protocol, the unconstrained result clipped to the eps-box and nothing else;
        # project: the iterates are inside already (this is a no-op there)
        result = project_with_bounds(result, *ball_bounds(x, self.eps))
        out = images.clone()
        out[attacked] = result
        return out, None

    def _attack(
        self,
        fwd,
        x: torch.Tensor,
        y: torch.Tensor,
        valid: torch.Tensor,
        counts: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
    ) -> torch.Tensor:
        """The attack on ``x`` ``(n, C, H, W)`` (every image with labelled pixels): iterates stay in
        ``[lower, upper]`` (``box="project"``: the eps-box and [0, 1]; ``"clip"``: [0, 1])."""
        raise NotImplementedError

    @staticmethod
    def _safe(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.where(valid, labels, torch.zeros_like(labels))
