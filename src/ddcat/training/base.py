"""What every training method shares: the interface and the supervised loss terms."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ddcat.errors import DdcatError
from ddcat.training.losses import cross_entropy, split_sizes


class Method:
    """A training method turns one mini-batch into the loss of one optimisation step.

    ``net`` is the module the loss is computed through (possibly wrapped in DDP); ``model`` is
    the plain :class:`~ddcat.models.Segmenter` underneath, which the attacks use.
    """

    name = "base"
    needs_ddc_heads = False

    def __init__(self, cfg: dict[str, Any], attack: Any = None):
        self.cfg = cfg
        self.attack = attack
        self.deep_sup_weight = cfg["train"]["deep_sup_weight"]

    def loss(
        self, net: nn.Module, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``seed``: the seed of this call's attack (its random start), passed per call."""
        raise NotImplementedError

    def supervised_terms(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """CE of the main head plus the weighted deep-supervision CE (when the model has that head)."""
        main = cross_entropy(out["main"], labels)
        if "deep_sup" not in out:  # a user model without an auxiliary output: no deep supervision
            return main, {"loss_main": main.item()}
        deep = cross_entropy(out["deep_sup"], labels)
        return main + self.deep_sup_weight * deep, {"loss_main": main.item(), "loss_deep_sup": deep.item()}


def adversarial_split(batch: int, adv_fraction: float, method: str) -> tuple[int, int]:
    """(clean, adversarial) image counts, or a DdcatError when the batch cannot be split."""
    n_clean, n_adv = split_sizes(batch, adv_fraction)
    if method.startswith("ddcat") and (n_clean == 0 or n_adv == 0):
        raise DdcatError(
            f"--method {method} needs clean and adversarial images in every batch: a batch of {batch} "
            f"with train.adv_fraction={adv_fraction} gives {n_clean} clean and {n_adv} adversarial"
        )
    if method == "sat" and 0.0 < adv_fraction < 1.0 and (n_clean == 0 or n_adv == 0):
        raise DdcatError(
            f"train.batch_size={batch} is too small to split with train.adv_fraction={adv_fraction} "
            f"({n_clean} clean, {n_adv} adversarial images)"
        )
    return n_clean, n_adv
