"""SGD with poly decay and a larger learning rate on the new (non-trunk) layers."""

from __future__ import annotations

import torch

from ddcat.config import CHOICES
from ddcat.errors import DdcatError, show
from ddcat.models import Segmenter


def build_optimizer(
    model: Segmenter, kind: str, lr: float, head_lr_mult: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with momentum (``kind="sgd"``, the paper's) or AdamW (``"adamw"``); trunk at ``lr``,
    context and heads at ``lr x head_lr_mult``."""
    if kind not in CHOICES["train.optimizer"]:
        raise DdcatError(f"train.optimizer: unknown optimizer {show(kind)}; valid: {', '.join(CHOICES['train.optimizer'])}")
    new = list(model.new_parameters())
    new_ids = {id(p) for p in new}
    trunk = [p for p in model.parameters() if id(p) not in new_ids]
    groups = [
        {"params": trunk, "lr": lr, "lr_mult": 1.0},
        {"params": new, "lr": lr * head_lr_mult, "lr_mult": head_lr_mult},
    ]
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float = 0.9) -> float:
    """lr_t = base * (1 - t / T) ** power."""
    return base_lr * (1.0 - iteration / max_iter) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, base_lr: float, iteration: int, max_iter: int, power: float) -> float:
    """Set every group's lr for ``iteration`` (0-based) of ``max_iter`` and return the base lr."""
    lr = poly_lr(base_lr, iteration, max_iter, power)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr
