"""What every training method shares: the interface, the batch split and the supervised loss terms.

A method is built from plain values (only :func:`ddcat.training.loop.build_method` reads the run
configuration) and turns one mini-batch into the loss of one optimisation step.
"""

from __future__ import annotations

import torch
from torch import nn

from ddcat.training.losses import cross_entropy
from ddcat.training.trainlog import LOSS_DEEP_SUP, LOSS_MAIN


def split_sizes(batch: int, adv_fraction: float) -> tuple[int, int]:
    """(clean, adversarial) counts: the first floor(m * (1 - f)) images stay clean (Alg. 3 step 7)."""
    n_clean = int((batch * (1.0 - adv_fraction)) + 1e-9)
    return n_clean, batch - n_clean


class Method:
    """A training method turns one mini-batch into the loss of one optimisation step.

    ``net`` is the module the loss is computed through (possibly wrapped in DDP); ``model`` is
    the plain :class:`~ddcat.models.Segmenter` underneath, which the attacks use.
    ``deep_sup_weight``: the weight of the deep-supervision CE (0.4 in the paper).
    """

    name = "base"
    needs_ddc_heads = False

    def __init__(self, deep_sup_weight: float):
        self.deep_sup_weight = deep_sup_weight

    def split(self, batch: int) -> tuple[int, int]:
        """(clean, adversarial) image counts of a batch of ``batch`` images, or a DdcatError when
        this method cannot train on such a batch. Without an attack every image stays clean."""
        return batch, 0

    def loss(
        self, net: nn.Module, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``seed``: the seed of this call's attack (its random start), passed per call."""
        raise NotImplementedError

    def supervised_terms(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """CE of the main head plus the weighted deep-supervision CE (when the model has that head)."""
        main = cross_entropy(out["main"], labels)
        if "deep_sup" not in out:  # a user model without an auxiliary output: no deep supervision
            return main, {LOSS_MAIN: main.item()}
        deep = cross_entropy(out["deep_sup"], labels)
        return main + self.deep_sup_weight * deep, {LOSS_MAIN: main.item(), LOSS_DEEP_SUP: deep.item()}


class AdversarialMethod(Method):
    """A method that trains on a batch whose last images are replaced by adversarial versions.

    ``attack``: the training attack (an :class:`~ddcat.attacks.Attack`); ``adv_fraction``: the
    share f of adversarial images (0.5 in the paper)."""

    def __init__(self, attack, adv_fraction: float, deep_sup_weight: float):
        super().__init__(deep_sup_weight)
        self.attack = attack
        self.adv_fraction = adv_fraction

    def split(self, batch: int) -> tuple[int, int]:
        return split_sizes(batch, self.adv_fraction)
