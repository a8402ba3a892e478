"""SGD with poly decay and a larger learning rate on the new (non-trunk) layers."""

from __future__ import annotations

from typing import Any

import torch

from ddcat.models import Segmenter


def build_optimizer(model: Segmenter, train_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW; trunk at ``lr``, context and heads at ``lr x head_lr_mult``."""
    new = list(model.new_parameters())
    new_ids = {id(p) for p in new}
    trunk = [p for p in model.parameters() if id(p) not in new_ids]
    groups = [
        {"params": trunk, "lr": train_cfg["lr"], "lr_mult": 1.0},
        {"params": new, "lr": train_cfg["lr"] * train_cfg["head_lr_mult"], "lr_mult": train_cfg["head_lr_mult"]},
    ]
    if train_cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    return torch.optim.SGD(groups, lr=train_cfg["lr"], momentum=train_cfg["momentum"], weight_decay=train_cfg["weight_decay"])


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float = 0.9) -> float:
    """lr_t = base * (1 - t / T) ** power."""
    return base_lr * (1.0 - iteration / max_iter) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, train_cfg: dict[str, Any], iteration: int) -> float:
    """Set every group's lr for ``iteration`` (0-based) and return the base lr."""
    lr = poly_lr(train_cfg["lr"], iteration, train_cfg["iters"], train_cfg["poly_power"])
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr
