"""Adversarial attacks on semantic segmentation models.

``adv = attack(model, images, labels)`` for any ``torch.nn.Module`` mapping [0, 1] images
``(N, 3, H, W)`` to logits ``(N, K, H, W)``; labels ``(N, H, W)`` int64 with 255 = ignore.
See :mod:`ddcat.attacks.iterative` for the guarantees every attack gives (exact eps-ball and [0, 1]
bounds, eval mode restored, no parameter/grad/buffer change, cost per step, determinism).
"""

from ddcat.attacks.iterative import BIM, FGSM, PGD, Attack, CosPGD, SegPGD
from ddcat.attacks.losses import (
    ce_loss,
    cospgd_loss,
    cospgd_weights,
    js_loss,
    masked_ce_loss,
    segpgd_lambda,
    segpgd_loss,
    segpgd_weights,
)
from ddcat.attacks.projection import project
from ddcat.attacks.worst import ATTACK_NAMES, WorstCase, build_attack, default_worst_case

__all__ = [
    "Attack",
    "FGSM",
    "BIM",
    "PGD",
    "SegPGD",
    "CosPGD",
    "WorstCase",
    "default_worst_case",
    "build_attack",
    "ATTACK_NAMES",
    "project",
    "ce_loss",
    "segpgd_lambda",
    "segpgd_weights",
    "segpgd_loss",
    "cospgd_weights",
    "cospgd_loss",
    "masked_ce_loss",
    "js_loss",
]
