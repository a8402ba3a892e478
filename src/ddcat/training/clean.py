"""No defense: plain supervised training (the paper's "No Defense" rows); with ``noise_sigma`` > 0
every image of the batch gets Gaussian noise (a base model for randomized smoothing)."""

from __future__ import annotations

from ddcat.training.base import Method, gaussian_noise
from ddcat.trainlog import LOSS


class CleanTraining(Method):
    name = "clean"

    def loss(self, net, model, images, labels, seed=None):
        loss, stats = self.supervised_terms(net(gaussian_noise(images, self.noise_sigma)), labels)
        return loss, {LOSS: loss.item(), **stats}
