"""Standard adversarial training (Alg. 1).

The batch keeps its first floor(m (1 - f)) images clean and replaces the rest by their
adversarial versions (f = ``train.adv_fraction``, 0.5 in the paper). Only the images that enter
the batch as adversarial are attacked.
"""

from __future__ import annotations

import torch

from ddcat.training.base import Method, adversarial_split


class StandardAdversarialTraining(Method):
    name = "sat"

    def loss(self, net, model, images, labels, seed=None):
        n_clean, n_adv = adversarial_split(images.shape[0], self.cfg["train"]["adv_fraction"], self.name)
        if n_adv:
            adv = self.attack(model, images[n_clean:], labels[n_clean:], seed=seed)
            images = torch.cat([images[:n_clean], adv])
        loss, stats = self.supervised_terms(net(images), labels)
        return loss, {"loss": loss.item(), **stats}
