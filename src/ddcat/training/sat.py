"""Standard adversarial training (Alg. 1).

The batch keeps its first floor(m (1 - f)) images clean and replaces the rest by their
adversarial versions (f = ``adv_fraction``, 0.5 in the paper). Only the images that enter
the batch as adversarial are attacked. ``noise_sigma`` noises the clean share only, so the
configuration refuses it with f = 1 (no clean share: it would add no noise).
"""

from __future__ import annotations

import torch

from ddcat.errors import DdcatError
from ddcat.training.base import AdversarialMethod, gaussian_noise
from ddcat.trainlog import LOSS


class StandardAdversarialTraining(AdversarialMethod):
    name = "sat"

    def split(self, batch: int) -> tuple[int, int]:
        """A fraction strictly between 0 and 1 needs both parts non-empty (0 and 1 are plain
        clean training and training on adversarial images only)."""
        n_clean, n_adv = super().split(batch)
        if 0.0 < self.adv_fraction < 1.0 and (n_clean == 0 or n_adv == 0):
            raise DdcatError(
                f"train.batch_size={batch} is too small to split with train.adv_fraction={self.adv_fraction} "
                f"({n_clean} clean, {n_adv} adversarial images)"
            )
        return n_clean, n_adv

    def loss(self, net, model, images, labels, seed=None):
        n_clean, n_adv = self.split(images.shape[0])
        if n_adv:
            with self.attack_context(images):
                adv = self.attack(model, images[n_clean:], labels[n_clean:], seed=seed)
            images = torch.cat([gaussian_noise(images[:n_clean], self.noise_sigma), adv])
        else:
            images = gaussian_noise(images, self.noise_sigma)
        loss, stats = self.supervised_terms(net(images), labels)
        return loss, {LOSS: loss.item(), **stats}
