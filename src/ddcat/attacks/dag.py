"""DAG, the Dense Adversary Generation attack (Xie, Wang, Zhang, Zhou, Xie & Yuille, ICCV 2017), L-inf.

Threat model: white-box, untargeted, images in [0, 1]; a minimum-norm attack run under the L-inf
budget ``eps`` in one of the two ways of :mod:`ddcat.attacks.min_norm` (``box="project"``, the
default, or rse's ``box="clip"``).

The update (adv-lib 0.2.8's ``dag`` with ``p = inf``, as rse runs it), per image, from ``r_0 = 0``:

* forward on ``x_i = clip(x + r_i, 0, 1)`` (``project``: clipped to the eps-box and [0, 1]);
* per labelled pixel the margin ``m = z_y - max_{k != y} z_k`` of the logits ``z``; a pixel is fooled
  when ``m < 0``; the image is done when at least ``adv_threshold`` (99 %) of its labelled pixels are
  fooled: it keeps ``x_i`` and leaves the batch (no further passes);
* otherwise ``g = grad_r sum_pixels relu(m)`` (the still-correct labelled pixels: a fooled pixel's
  relu is 0), ``r_{i+1} = r_i - gamma * g / max(||g||_inf, 1e-8)`` (``project``: then clipped to
  [-eps, eps]).

``steps`` iterations (rse: 200) with ``gamma`` 0.001 and 0.003 (rse runs both: registry names
``dag`` and ``dag-003``). ``clip`` returns, as adv-lib does, the first iterate that reached the
threshold and the CLEAN image for an image that never did, clipped to the eps-box; ``project`` returns
the best iterate by :class:`~ddcat.attacks.scoring.Score`.

Shapes: images ``(N, C, H, W)``, labels ``(N, H, W)`` (255 = ignore), logits ``(N, K, H, W)``.
Cost: at most ``steps`` forwards and ``steps - 1`` input-gradient backwards on the images not done
(the last iteration's update would never be evaluated: its backward is skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ddcat.attacks.base import set_field
from ddcat.attacks.min_norm import BestScore, MinNormAttack, check_positive, difference_of_logits, fooled_fraction

__all__ = ["DAG", "dag_step"]


def dag_step(r: torch.Tensor, grad: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r - gamma * grad / max(||grad||_inf, 1e-8)``, the norm per image (dim 0 is the batch)."""
    norm = grad.flatten(1).abs().amax(dim=1).clamp_min(1e-8)
    return r - gamma * grad / norm.view(-1, *([1] * (grad.dim() - 1)))


@dataclass(frozen=True)
class DAG(MinNormAttack):
    """DAG (see the module docstring). ``DAG(eps=8/255, gamma=0.003)(model, images, labels)``.

    Args: ``eps`` budget; ``steps`` iterations (default 200, rse's); ``gamma`` step (default 0.001);
    ``adv_threshold`` share of labelled pixels that makes an image done (0.99); ``box`` "project" or
    "clip"; ``precision``. Deterministic (no randomness)."""

    steps: int = 200
    gamma: float = 0.001

    label: ClassVar[str] = "DAG"

    def __post_init__(self) -> None:
        super().__post_init__()
        set_field(self, "gamma", check_positive("gamma", self.gamma))

    def _attack(self, fwd, x, y, valid, counts, lower, upper):
        safe = self._safe(y, valid)
        r = torch.zeros_like(x)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        found = x.clone()  # clip: adv-lib's result (the clean image until the threshold is reached)
        best = BestScore(x) if self.box == "project" else None
        for i in range(self.steps):
            act = (~done).nonzero().squeeze(1)
            last = i == self.steps - 1
            with torch.enable_grad():
                r_a = r[act].requires_grad_(not last)
                x_a = torch.clamp(x[act] + r_a, lower[act], upper[act])
                logits = fwd.logits(x_a)
                margin = difference_of_logits(logits.float(), safe[act])
                is_adv = fooled_fraction(margin < 0, valid[act], counts[act]) >= self.adv_threshold
                if best is not None:
                    best.update(act, x_a, logits, y[act])
                found[act[is_adv]] = x_a.detach()[is_adv]
                done[act[is_adv]] = True
                if last or bool(is_adv.all()):
                    break
                loss = (margin * valid[act]).relu()[~is_adv].sum()
                (g,) = torch.autograd.grad(loss, r_a)
            r_new = dag_step(r_a.detach(), g, self.gamma)
            if self.box == "project":
                r_new = r_new.clamp(-self.eps, self.eps)
            keep = ~is_adv  # the done images leave with their r unchanged (their gradient is 0)
            r[act[keep]] = r_new[keep]
        return best.x if best is not None else found
