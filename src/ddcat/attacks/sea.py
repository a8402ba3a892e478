"""SEA, the Segmentation Ensemble Attack (Croce, Singh & Hein, ECCV 2024), L-inf and L2.

APGD (:class:`~ddcat.attacks.apgd.APGD`) with each of its losses (default: masked CE, balanced
masked CE and JS; ``spherical=True`` adds masked spherical), ``steps`` iterations each, red-eps on
by default; the result is, per image, the member result with the lowest pixel accuracy
(the ensemble protocol of :mod:`ddcat.attacks.ensemble`, without early skip). The dataset-level
worst case for mIoU is not decomposable per batch: an evaluation keeps every member's per-image
class counts and calls :func:`ddcat.metrics.greedy_miou_selection`.

Threat model: the L-inf ball of radius ``eps`` intersected with [0, 1], white-box, untargeted;
``norm="l2"``: the L2 ball per image (every member is APGD-L2, see :mod:`ddcat.attacks.apgd`).
Cost: the sum of the members' costs (each early-stops the images it fools); the per-image choice
costs nothing extra (every member tracks its own score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ddcat.attacks import losses as L
from ddcat.attacks.apgd import APGD
from ddcat.attacks.base import set_field
from ddcat.attacks.checks import check_class_counts, check_count, check_eps, check_precision, check_seed
from ddcat.attacks.ensemble import MemberSet
from ddcat.attacks.norms import NORMS, check_norm
from ddcat.constants import EPS, ITERS
from ddcat.errors import DdcatError

__all__ = ["SEA", "SEA_LOSSES"]

#: SEA's default losses.
SEA_LOSSES = ("masked-ce", "balanced-masked-ce", "js")


@dataclass(frozen=True)
class SEA(MemberSet):
    """``SEA(eps=EPS, steps=ITERS, losses=SEA_LOSSES, spherical=False, red_eps=True, class_counts=None,
    seed=0)``; ``members`` = the APGD attacks it runs, in order. ``class_counts``: per-class pixel
    counts of the training split for ``balanced-masked-ce`` (None: each image's own counts, see
    :func:`ddcat.attacks.losses.balanced_weights`). A per-call ``seed`` reaches every member."""

    eps: float = EPS
    steps: int = ITERS
    losses: tuple[str, ...] = SEA_LOSSES
    spherical: bool = False
    red_eps: bool = True
    class_counts: tuple[float, ...] | None = None
    seed: int = 0
    restarts: int = 1
    precision: str = "fp32"
    norm: str = "linf"
    members: tuple[APGD, ...] = field(init=False, repr=False, compare=False)

    label: ClassVar[str] = "SEA"
    budget: ClassVar[str] = "iters"
    randomized: ClassVar[bool] = True
    early_skip: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __post_init__(self) -> None:
        set_field(self, "eps", check_eps(self.eps))
        set_field(self, "steps", check_count("steps", self.steps, 0))
        if isinstance(self.losses, str):
            raise DdcatError(f"SEA losses must be a sequence of loss names, got the string {self.losses!r}")
        losses = tuple(L.loss_name(name) for name in self.losses)
        if not losses:
            raise DdcatError("SEA needs at least one loss, got none")
        set_field(self, "spherical", bool(self.spherical))
        if self.spherical and "masked-spherical" not in losses:
            losses += ("masked-spherical",)
        set_field(self, "losses", losses)
        set_field(self, "red_eps", bool(self.red_eps))
        set_field(self, "class_counts", check_class_counts(self.class_counts))
        set_field(self, "seed", check_seed(self.seed))
        set_field(self, "restarts", check_count("restarts", self.restarts, 1))
        set_field(self, "precision", check_precision(self.precision))
        set_field(self, "norm", check_norm(self.norm, "SEA"))
        members = tuple(
            APGD(
                eps=self.eps,
                steps=self.steps,
                loss=name,
                red_eps=self.red_eps,
                restarts=self.restarts,
                class_counts=self.class_counts if name == "balanced-masked-ce" else None,  # equal to standalone APGD
                seed=self.seed,
                precision=self.precision,
                norm=self.norm,
            )
            for name in losses
        )
        set_field(self, "members", members)
