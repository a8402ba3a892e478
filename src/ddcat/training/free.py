"""Free adversarial training (Shafahi et al., "Adversarial Training for Free!", NeurIPS 2019, Alg. 1).

Threat model: L-inf ball of radius eps intersected with [0, 1], white-box, untargeted. One
perturbation delta (the shape of the batch's adversarial share, (n_a, C, H, W)) starts at 0 and is
carried from replay to replay and from batch to batch. Each mini-batch is replayed m times
(``train.free_replays``); each replay is ONE forward and ONE backward of the training loss at
x + delta, which gives both the weight gradient (the optimiser step) and grad_delta::

    for each batch B, m times:                          # one loop iteration per replay
        x_adv = clip_[0,1](x_B + delta)                 # the last n_a images of B; the first stay clean
        loss  = CE(f(clean part ++ x_adv)) (+ 0.4 deep-supervision CE)
        backward: theta <- optimiser step on grad_theta
        delta <- clip_[-eps, eps](delta + eps * sign(grad_delta loss))   # kept when grad_delta is not finite

What ``train.iters`` means here: the number of replays, i.e. of forward/backward passes and of
optimiser steps, exactly as for every other method; the run sees ceil(iters / m) distinct batches
(the paper's "epochs / m"), and the last batch is replayed fewer than m times when m does not divide
iters. A free run of N iterations therefore costs what a clean run of N iterations costs (plus the
sign and clip of delta) while a SAT run of N iterations costs about 2N.

The perturbation gradient comes from the training forward itself (train mode: BatchNorm batch
statistics, dropout), which is what makes it free; ddcat's other attacks run in eval mode. When the
adversarial share's shape changes (another crop size, a last batch of another size) delta restarts
at 0, as at the start of training. delta is part of the training state: it is saved in ``last.pt``
(``method_state``, one entry per process) so that ``--resume`` continues bit-exactly.
"""

from __future__ import annotations

import torch

from ddcat.attacks.projection import ball_bounds, project_with_bounds
from ddcat.errors import DdcatError
from ddcat.training.base import AdversarialMethod
from ddcat.trainlog import LOSS


def free_update(delta: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """Shafahi et al.'s Alg. 1, line 11: ``clip(delta + eps * sign(grad), -eps, eps)``."""
    return (delta + eps * grad.sign()).clamp(-eps, eps)


class FreeAdversarialTraining(AdversarialMethod):
    """``free``: m replays per batch, one backward per replay (see the module docstring).

    ``eps``: the radius (``attack.eps``); ``replays``: m (``train.free_replays``, 4 by default);
    ``adv_fraction``: the share of the batch that is perturbed (``train.adv_fraction``; the paper
    perturbs the whole batch, 1.0). ``attack`` is the attack the robustness watch calls "the
    training attack": FGSM at eps, the step free AT takes from delta = 0."""

    name = "free"

    def __init__(self, attack, eps: float, replays: int, adv_fraction: float, deep_sup_weight: float):
        super().__init__(attack, adv_fraction, deep_sup_weight)
        if replays < 1:
            raise DdcatError(f"train.free_replays must be >= 1, got {replays}")
        self.eps = float(eps)
        self.replays = int(replays)
        self.delta: torch.Tensor | None = None  # the carried perturbation (detached)
        self._pending: torch.Tensor | None = None  # last replay's delta leaf, its .grad set by the loop's backward

    def split(self, batch: int) -> tuple[int, int]:
        n_clean, n_adv = super().split(batch)
        if n_adv == 0:
            raise DdcatError(f"--method free with train.adv_fraction={self.adv_fraction} perturbs no image of a batch of {batch}")
        return n_clean, n_adv

    def _advance(self) -> None:
        """Apply the perturbation step of the replay whose backward has run. A gradient with an inf
        or NaN anywhere (``train.amp: fp16`` overflow: the GradScaler skips that replay's optimiser
        step) leaves delta as it was, rather than stepping eps along sign(+-inf) = +-1 (or along
        sign(NaN)). The choice is made on the device (no host sync)."""
        leaf, self._pending = self._pending, None
        if leaf is not None and leaf.grad is not None:
            start = leaf.detach()
            self.delta = torch.where(torch.isfinite(leaf.grad).all(), free_update(start, leaf.grad, self.eps), start)
        elif leaf is not None:
            self.delta = leaf.detach()

    def loss(self, net, model, images, labels, seed=None):
        self._advance()
        n_clean, n_adv = self.split(images.shape[0])
        part = images[n_clean:]
        start = self.delta
        if start is None or start.shape != part.shape:
            start = torch.zeros_like(part)
        leaf = start.to(device=part.device, dtype=part.dtype).clone().requires_grad_(True)
        self._pending = leaf
        adv = (part + leaf).clamp(0.0, 1.0)  # Alg. 1: the gradient flows to delta wherever x + delta is in [0, 1]
        # the value rounded into the exact eps-ball (x + delta can overshoot eps by an ulp); the
        # gradient stays that of the clamp above, so a coordinate at |delta| = eps can come back
        lower, upper = ball_bounds(part, self.eps)
        adv = adv + (project_with_bounds(adv, lower, upper) - adv).detach()
        loss, stats = self.supervised_terms(net(torch.cat([images[:n_clean], adv])), labels)
        return loss, {LOSS: loss.item(), **stats}

    def state_dict(self) -> dict:
        """The carried perturbation after the last replay's step (None before the first)."""
        self._advance()
        return {"delta": None if self.delta is None else self.delta.detach().cpu()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        delta = state.get("delta") if isinstance(state, dict) else None
        if delta is not None and not (isinstance(delta, torch.Tensor) and delta.is_floating_point() and delta.dim() == 4):
            raise DdcatError("'method_state' of --method free must hold a 4-d float tensor 'delta'")
        self.delta = None if delta is None else delta.to(device).clamp(-self.eps, self.eps)
        self._pending = None
