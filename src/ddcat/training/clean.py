"""No defense: plain supervised training (the paper's "No Defense" rows)."""

from __future__ import annotations

import torch

from ddcat.training.base import Method


class CleanTraining(Method):
    name = "clean"

    def loss(self, net, model, images, labels, seed=None):
        loss, stats = self.supervised_terms(net(images), labels)
        return loss, {"loss": loss.item(), **stats}
