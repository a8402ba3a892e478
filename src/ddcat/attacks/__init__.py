"""Adversarial attacks on semantic segmentation models.

``adv = attack(model, images, labels, *, forward=None, seed=None)`` for any ``torch.nn.Module``
mapping [0, 1] images ``(N, 3, H, W)`` to logits ``(N, K, H, W)``; labels ``(N, H, W)`` int64 with
255 = ignore. Attacks are immutable values (hashable, comparable). See :mod:`ddcat.attacks.base`
for the guarantees every attack gives (exact eps-ball and [0, 1] bounds, eval mode restored, no
parameter/grad/buffer change, determinism, the forward seam).

Modules: ``checks`` (argument checks), ``forward`` (how an attack calls the model), ``scoring``
(the per-image "better adversarial" rule), ``projection`` (the exact eps-ball), ``losses`` (the loss
table), ``iterative`` (FGSM, BIM, PGD, SegPGD, CosPGD), ``apgd``, ``sea``, ``worst_case`` (per-image
and greedy mIoU worst cases), ``factory`` (attacks by name).
"""

from ddcat.attacks.apgd import APGD, apgd_checkpoints, should_halve
from ddcat.attacks.base import Attack
from ddcat.attacks.factory import ATTACK_NAMES, build_attack
from ddcat.attacks.iterative import BIM, FGSM, PGD, CosPGD, SegPGD
from ddcat.attacks.losses import LOSSES
from ddcat.attacks.projection import project
from ddcat.attacks.scoring import Score
from ddcat.attacks.sea import SEA, SEA_LOSSES
from ddcat.attacks.worst_case import (
    WorstCase,
    default_worst_case,
    greedy_miou_selection,
    miou_of_confusions,
    per_image_confusions,
)

__all__ = [
    "Attack",
    "FGSM",
    "BIM",
    "PGD",
    "SegPGD",
    "CosPGD",
    "APGD",
    "SEA",
    "SEA_LOSSES",
    "WorstCase",
    "default_worst_case",
    "greedy_miou_selection",
    "per_image_confusions",
    "miou_of_confusions",
    "apgd_checkpoints",
    "should_halve",
    "build_attack",
    "ATTACK_NAMES",
    "LOSSES",
    "Score",
    "project",
]
