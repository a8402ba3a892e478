"""The per-image worst case over several attacks (``worst``): the ensemble protocol of
:mod:`ddcat.attacks.ensemble` without early skip. The dataset-level worst case for mIoU is metrics
(:func:`ddcat.metrics.greedy_miou_selection`); an evaluation computes it for every ensemble."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ddcat.attacks.base import Attack, set_field
from ddcat.attacks.ensemble import MemberSet, check_members, ensemble_run
from ddcat.attacks.iterative import BIM, PGD, CosPGD, SegPGD
from ddcat.attacks.norms import NORMS
from ddcat.attacks.scoring import Score
from ddcat.constants import ALPHA, EPS

__all__ = ["WorstCase", "default_worst_case", "worst_case_run"]


def worst_case_run(
    attacks: Sequence[Attack], model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, **options: Any
) -> tuple[torch.Tensor, Score]:
    """Per image, the result of ``attacks`` with the fewest correctly classified valid pixels (ties:
    higher per-image CE; exact ties: the earlier attack). ``known`` maps attacks (values) to
    adversarial images the caller already computed for this batch: those are only scored (one
    no-grad forward) instead of run again. ``options``: ``forward``, ``seed``, ``known``. The ensemble protocol without early skip
    (:func:`ddcat.attacks.ensemble.ensemble_run`)."""
    return ensemble_run(attacks, model, images, labels, **options)


@dataclass(frozen=True)
class WorstCase(MemberSet):
    """Runs every attack and returns, per image, the adversarial image with the fewest correctly
    classified valid pixels (ties: higher per-image cross-entropy; exact ties: the earlier attack):
    never a higher per-image accuracy than any member.

    This is the "per-image worst case" protocol of later robustness evaluations. The members must
    be untargeted. Each member costs what it costs alone; one that does not track its own score
    (BIM, FGSM) costs one extra no-grad forward to be scored. ``eps`` is the largest eps of the
    members, so the eps-ball guarantee holds for that eps (and per image for the eps of the attack
    whose result was chosen). A per-call ``seed`` reaches every member."""

    attacks: tuple[Attack, ...] = ()

    def __post_init__(self) -> None:
        set_field(self, "attacks", check_members(self.attacks, "WorstCase"))

    label: ClassVar[str] = "worst"
    randomized: ClassVar[bool] = True
    early_skip: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = NORMS  # default_worst_case passes its norm to every member

    @property
    def members(self) -> tuple[Attack, ...]:
        return self.attacks


def default_worst_case(
    eps: float = EPS,
    alpha: float = ALPHA,
    steps: int = 10,
    restarts: int = 1,
    seed: int = 0,
    precision: str = "fp32",
    norm: str = "linf",
) -> WorstCase:
    """The default per-image worst case: BIM, PGD (CE), SegPGD, CosPGD, PGD with masked CE and PGD
    with the JS divergence, all at the same ``eps``, ``alpha``, ``steps`` and ``norm``."""
    common = dict(restarts=restarts, seed=seed, precision=precision, norm=norm)
    return WorstCase(
        (
            BIM(eps, alpha, steps, precision=precision, norm=norm),
            PGD(eps, alpha, steps, loss="ce", **common),
            SegPGD(eps, alpha, steps, **common),
            CosPGD(eps, alpha, steps, **common),
            PGD(eps, alpha, steps, loss="masked-ce", **common),
            PGD(eps, alpha, steps, loss="js", **common),
        )
    )
