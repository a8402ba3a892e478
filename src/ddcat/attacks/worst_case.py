"""Worst cases over several attacks: per image (pixel accuracy) and greedy over a dataset (mIoU)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ddcat.attacks.base import Attack
from ddcat.attacks.checks import check_inputs, check_seed
from ddcat.attacks.forward import ForwardFn, eval_mode
from ddcat.attacks.iterative import BIM, PGD, CosPGD, SegPGD, _set
from ddcat.attacks.scoring import Score, keep_better
from ddcat.constants import ALPHA, EPS, IGNORE_INDEX
from ddcat.errors import DdcatError

__all__ = [
    "WorstCase",
    "default_worst_case",
    "worst_case_run",
    "per_image_confusions",
    "miou_of_confusions",
    "greedy_miou_selection",
]


def worst_case_run(
    attacks: Sequence[Attack],
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    forward: ForwardFn | None = None,
    seed: int | None = None,
    known: Mapping[Attack, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, Score]:
    """Per image, the result of ``attacks`` with the fewest correctly classified valid pixels (ties:
    higher per-image CE; exact ties: the earlier attack). ``known`` maps attacks (values) to
    adversarial images the caller already computed for this batch: those are only scored (one
    no-grad forward) instead of run again."""
    if not isinstance(model, torch.nn.Module):
        raise DdcatError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    images, labels = check_inputs(images, labels)
    call = forward if forward is not None else model
    known = known or {}
    best_x: torch.Tensor | None = None
    best: Score | None = None
    with eval_mode(model):
        for attack in attacks:
            if attack in known:
                x = known[attack]
                with torch.no_grad():
                    sc = Score.of(call(x), labels, targeted=False)
            else:
                x, sc = attack.run(model, images, labels, score=True, forward=forward, seed=seed)
            assert sc is not None
            best_x, best = keep_better(best_x, best, x, sc)
    assert best_x is not None and best is not None
    return best_x.detach(), best


@dataclass(frozen=True)
class WorstCase(Attack):
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
        attacks = tuple(self.attacks)
        if not attacks:
            raise DdcatError("WorstCase needs at least one attack, got none")
        for a in attacks:
            if not isinstance(a, Attack):
                raise DdcatError(f"WorstCase takes ddcat attacks, got {type(a).__name__}")
            if a.targeted:
                raise DdcatError(f"WorstCase takes untargeted attacks only, got targeted {a!r}")
        _set(self, "attacks", attacks)

    targeted = False
    precision = "fp32"

    @property
    def eps(self) -> float:
        return max(a.eps for a in self.attacks)

    @property
    def steps(self) -> int:
        return max(a.steps for a in self.attacks)

    @property
    def starts_at_clean(self) -> bool:
        return self.attacks[0].starts_at_clean

    def run(self, model, images, labels, score=False, *, forward=None, seed=None, known=None):
        """As :meth:`Attack.run`, plus ``known`` (see :func:`worst_case_run`)."""
        return worst_case_run(self.attacks, model, images, labels, forward=forward, seed=seed, known=known)


def default_worst_case(
    eps: float = EPS,
    alpha: float = ALPHA,
    steps: int = 10,
    restarts: int = 1,
    seed: int = 0,
    precision: str = "fp32",
) -> WorstCase:
    """The default per-image worst case: BIM, PGD (CE), SegPGD, CosPGD, PGD with masked CE and PGD
    with the JS divergence, all at the same ``eps``, ``alpha`` and ``steps``."""
    common = dict(restarts=restarts, seed=seed, precision=precision)
    return WorstCase(
        (
            BIM(eps, alpha, steps, precision=precision),
            PGD(eps, alpha, steps, loss="ce", **common),
            SegPGD(eps, alpha, steps, **common),
            CosPGD(eps, alpha, steps, **common),
            PGD(eps, alpha, steps, loss="masked-ce", **common),
            PGD(eps, alpha, steps, loss="js", **common),
        )
    )


# ----------------------------------------------------------------------------- greedy mIoU


def per_image_confusions(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, K, K)`` int64 confusion matrix of each image (rows ground truth, columns prediction;
    ignored pixels skipped), from predictions and labels ``(N, H, W)``."""
    n, k = labels.shape[0], num_classes
    valid = labels != IGNORE_INDEX
    image = torch.arange(n, device=labels.device).view(n, 1, 1).expand_as(labels)
    index = (image * k + labels.clamp(0, k - 1)) * k + pred.clamp(0, k - 1)
    counts = torch.bincount(index[valid].reshape(-1).to(torch.int64), minlength=n * k * k)
    return counts.reshape(n, k, k).cpu()


def miou_of_confusions(matrices: torch.Tensor) -> torch.Tensor:
    """mIoU of each confusion matrix ``(..., K, K)`` -> ``(...)`` float64: the mean IoU over the
    classes whose union is non-empty (0 when none is), as :func:`ddcat.metrics.metrics_from_confusion`."""
    m = matrices.to(torch.float64)
    tp = m.diagonal(dim1=-2, dim2=-1)
    union = m.sum(-1) + m.sum(-2) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    count = present.sum(-1)
    return torch.where(count > 0, iou.sum(-1) / count.clamp(min=1), torch.zeros_like(iou[..., 0]))


def greedy_miou_selection(
    per_image_confusions: torch.Tensor, rounds: int = 10, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """Dataset-level worst case for mIoU over ``A`` attacks (Croce, Singh & Hein, 2024).

    ``per_image_confusions`` ``(A, N, K, K)``: the confusion matrix of image ``n`` under attack
    ``a``. Start from the single attack with the lowest dataset mIoU (ties: the first), then in
    each round visit the images in a random order (``torch.Generator`` seeded with ``seed``) and
    switch an image to the attack that lowers the dataset mIoU most, if it lowers it at all;
    stop after ``rounds`` rounds or a round that changes nothing. Returns the attack chosen per
    image ``(N,)`` int64 and the resulting mIoU, which is never higher than the best single attack's.
    """
    conf = torch.as_tensor(per_image_confusions).to(torch.int64).cpu()
    if conf.dim() != 4 or conf.shape[-1] != conf.shape[-2] or conf.shape[0] < 1:
        raise DdcatError(f"per_image_confusions must have shape (A, N, K, K) with A >= 1, got {tuple(conf.shape)}")
    rounds = int(rounds)
    gen = torch.Generator().manual_seed(check_seed(seed))
    totals = conf.sum(dim=1)  # (A, K, K)
    single = miou_of_confusions(totals)
    first = int(torch.argmin(single))  # argmin returns the first minimum
    n = conf.shape[1]
    choice = torch.full((n,), first, dtype=torch.int64)
    total = totals[first].clone()
    current = float(single[first])
    for _ in range(rounds):
        changed = False
        for i in torch.randperm(n, generator=gen).tolist():
            candidates = total.unsqueeze(0) - conf[choice[i], i].unsqueeze(0) + conf[:, i]  # (A, K, K)
            values = miou_of_confusions(candidates)
            a = int(torch.argmin(values))
            if float(values[a]) < current:
                choice[i] = a
                total = candidates[a]
                current = float(values[a])
                changed = True
        if not changed:
            break
    return choice, current
