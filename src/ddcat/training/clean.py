"""No defense: plain supervised training (the paper's "No Defense" rows)."""

from __future__ import annotations

from ddcat.training.base import Method
from ddcat.training.trainlog import LOSS


class CleanTraining(Method):
    name = "clean"

    def loss(self, net, model, images, labels, seed=None):
        loss, stats = self.supervised_terms(net(images), labels)
        return loss, {LOSS: loss.item(), **stats}
