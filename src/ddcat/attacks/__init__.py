"""Adversarial attacks on semantic segmentation models.

``adv = attack(model, images, labels, *, forward=None, seed=None)`` for any ``torch.nn.Module``
mapping [0, 1] images ``(N, 3, H, W)`` to logits ``(N, K, H, W)``; labels ``(N, H, W)`` int64 with
255 = ignore. Attacks are immutable values (hashable, comparable). See :mod:`ddcat.attacks.base`
for the guarantees every attack gives (exact eps-ball and [0, 1] bounds, eval mode restored, no
parameter/grad/buffer change, determinism, the forward seam).

Modules: ``checks`` (argument checks), ``forward`` (how an attack calls the model), ``scoring``
(the per-image "better adversarial" rule), ``projection`` (the exact eps-ball), ``norms`` (the L-inf
and L2 threat models), ``losses`` (the loss table), ``iterative`` (FGSM, BIM, PGD, SegPGD, CosPGD),
``fgsm_rs`` (FGSM with a random start, the single-step training attack), ``apgd``, ``padam``
(PAdam), ``sea``, ``ensemble`` (the member loop every ensemble shares, ``Ensemble``), ``worst_case``
(the per-image worst case), ``min_norm``, ``dag``, ``pdpgd``, ``alma_prox`` (the minimum-norm
attacks of rse: DAG, PDPGD, ALMA-prox), ``registry`` (the one list of attacks: names, labels,
budgets, ensemble members; ``build_attack``), ``factory`` (the registry's old import path). The
dataset-level worst case for mIoU is metrics: :func:`ddcat.metrics.greedy_miou_selection`.
"""

from ddcat.attacks.alma_prox import ALMAProx
from ddcat.attacks.apgd import APGD, apgd_checkpoints, should_halve
from ddcat.attacks.base import Attack
from ddcat.attacks.dag import DAG
from ddcat.attacks.ensemble import ENSEMBLE_VERSION, Ensemble, member_loop
from ddcat.attacks.registry import ATTACK_NAMES, REGISTRY, build_attack, build_ensemble
from ddcat.attacks.iterative import BIM, FGSM, PGD, CosPGD, SegPGD
from ddcat.attacks.losses import LOSSES
from ddcat.attacks.norms import NORMS, project_l2
from ddcat.attacks.padam import PAdam, adam_step
from ddcat.attacks.pdpgd import PDPGD
from ddcat.attacks.projection import project
from ddcat.attacks.scoring import Score
from ddcat.attacks.sea import SEA, SEA_LOSSES
from ddcat.attacks.worst_case import WorstCase, default_worst_case

__all__ = [
    "Attack",
    "FGSM",
    "BIM",
    "PGD",
    "SegPGD",
    "CosPGD",
    "APGD",
    "PAdam",
    "adam_step",
    "NORMS",
    "project_l2",
    "SEA",
    "SEA_LOSSES",
    "DAG",
    "PDPGD",
    "ALMAProx",
    "WorstCase",
    "default_worst_case",
    "Ensemble",
    "ENSEMBLE_VERSION",
    "member_loop",
    "build_ensemble",
    "REGISTRY",
    "apgd_checkpoints",
    "should_halve",
    "build_attack",
    "ATTACK_NAMES",
    "LOSSES",
    "Score",
    "project",
]
