"""What every training method shares: the interface, the batch split and the supervised loss terms.

A method is built from plain values (only :func:`ddcat.training.loop.build_method` reads the run
configuration) and turns one mini-batch into the loss of one optimisation step.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ddcat.training.losses import cross_entropy
from ddcat.trainlog import LOSS_DEEP_SUP, LOSS_MAIN


def gaussian_noise(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images + sigma * N(0, I)``, no clipping: the Gaussian-noise augmentation that makes a base
    model for randomized smoothing (Cohen et al. 2019; SegCertify, Fischer et al. 2021, train with
    the sigma they certify at). The noise comes from torch's global RNG, which the training loop
    seeds per (seed, iteration, shard): a resumed run draws the same noise. ``sigma == 0`` returns
    ``images`` itself and draws nothing."""
    if sigma == 0:
        return images
    return images + sigma * torch.randn_like(images)


def split_sizes(batch: int, adv_fraction: float) -> tuple[int, int]:
    """(clean, adversarial) counts: the first floor(m * (1 - f)) images stay clean (Alg. 3 step 7)."""
    n_clean = int((batch * (1.0 - adv_fraction)) + 1e-9)
    return n_clean, batch - n_clean


class Method:
    """A training method turns one mini-batch into the loss of one optimisation step.

    ``net`` is the module the loss is computed through (possibly wrapped in DDP); ``model`` is
    the plain :class:`~ddcat.models.Segmenter` underneath, which the attacks use.
    ``deep_sup_weight``: the weight of the deep-supervision CE (0.4 in the paper);
    ``noise_sigma``: std of the Gaussian noise added to the clean share of the batch (0 = none;
    see :func:`gaussian_noise`).
    """

    name = "base"
    needs_ddc_heads = False
    #: loop iterations (= optimiser steps) per mini-batch: free AT replays each batch m times
    replays = 1

    def __init__(self, deep_sup_weight: float, noise_sigma: float = 0.0):
        self.deep_sup_weight = deep_sup_weight
        self.noise_sigma = noise_sigma

    def split(self, batch: int) -> tuple[int, int]:
        """(clean, adversarial) image counts of a batch of ``batch`` images, or a DdcatError when
        this method cannot train on such a batch. Without an attack every image stays clean."""
        return batch, 0

    def loss(
        self, net: nn.Module, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``seed``: the seed of this call's attack (its random start), passed per call."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Training state the method carries between iterations (saved in ``last.pt`` for an exact
        resume); none for a method whose iterations are independent."""
        return {}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Restore what :meth:`state_dict` returned."""

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

    def __init__(self, attack, adv_fraction: float, deep_sup_weight: float, noise_sigma: float = 0.0):
        super().__init__(deep_sup_weight, noise_sigma)
        self.attack = attack
        self.adv_fraction = adv_fraction

    #: the precision of the training attack's forwards: ``fp32`` (autocast off, the attack is built
    #: with ``precision="fp32"``) or ``bf16`` (the attack is built with ``precision="autocast"`` and
    #: runs inside :meth:`attack_context`); ``attack.precision`` in the config
    attack_dtype = "fp32"

    def split(self, batch: int) -> tuple[int, int]:
        return split_sizes(batch, self.adv_fraction)

    def attack_context(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """bf16 autocast around the attack (and DDC-AT's B_clean / B_adv) when ``attack_dtype`` is
        ``bf16``; otherwise nothing (an fp32 attack turns autocast off itself)."""
        if self.attack_dtype == "bf16":
            return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
