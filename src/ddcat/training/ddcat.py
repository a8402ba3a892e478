"""Dynamic divide-and-conquer adversarial training (Alg. 2 and 3) and its ablations.

One iteration, for a batch D_b of m images (first n_c stay clean, last n_a become adversarial):

1. Alg. 2, under ``no_grad`` except for the attack, with the model in eval mode:
   - attack the images whose mask labels or training inputs need an adversarial version
     (all m for ``ddcat`` / ``ddcat-m``, the adversarial part for ``ddcat-n``) using the main
     branch's loss; the attack's first forward, which sees the clean images, also yields the
     combined prediction B_clean from the f_a / f_m heads on the same trunk features;
   - one no-grad forward of the adversarial images through f_n, f_a, f_m gives B_adv;
   - mask labels from :func:`ddcat.training.losses.mask_labels`.
2. Alg. 3 steps 4-9, in train mode: one forward of T_b = clean part + adversarial part through
   all heads; p = argmax f_m (detached), q = 1 - p; loss = l1 L_n + l2 L_a + l3 L_m
   (eqs. 3-6) + deep-supervision CE; one backward.

Alg. 3 updates {S, f_n, f_a} with eqs. 3-4 and {S, f_m} with eq. 5; ddcat takes one optimiser
step on their sum, eq. 6, which is the same gradient for each head and sums the two gradients
on the shared trunk.
"""

from __future__ import annotations

import torch
from torch import nn

from ddcat.training.base import Method, adversarial_split
from ddcat.training.losses import (
    combine,
    cross_entropy,
    mask_labels,
    mask_loss,
    routed_cross_entropy,
    routing,
)

DDC_TRAIN_HEADS = ("main", "auxiliary", "mask")


def combined_labels(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Label map B of the combined output o = o_a p + o_n (1 - p)."""
    return combine(out["main"], out["auxiliary"], routing(out["mask"])).argmax(dim=1)


class CleanPredictionTap(nn.Module):
    """Wraps the model for the attack so that its first forward, on the clean images, also
    computes the combined prediction B_clean from the same trunk features (heads f_a and f_m
    cost a small fraction of the trunk). The attack still sees only the main logits."""

    def __init__(self, model: nn.Module, clean: torch.Tensor):
        super().__init__()
        self.model = model
        self.clean = clean
        self.b_clean: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.b_clean is None and x.shape == self.clean.shape and torch.equal(x.detach(), self.clean):
            out = self.model(x, heads=DDC_TRAIN_HEADS)
            with torch.no_grad():
                self.b_clean = combined_labels({k: v.detach() for k, v in out.items()})
            return out["main"]
        return self.model(x)


@torch.no_grad()
def predict_combined(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """B for a batch, with the model in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return combined_labels(model(images, heads=DDC_TRAIN_HEADS))
    finally:
        model.train(was_training)


class DivideAndConquerTraining(Method):
    """``ddcat`` (the paper's division), ``ddcat-m`` and ``ddcat-n`` (Sec. 6.4 ablations)."""

    needs_ddc_heads = True

    def __init__(self, cfg, attack=None, division: str = "ddcat"):
        super().__init__(cfg, attack)
        self.name = self.division = division
        t = cfg["train"]
        self.lambdas = (t["lambda_main"], t["lambda_aux"], t["lambda_mask"])
        self.mask_ignore = t["mask_ignore"]

    def mask_targets(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, n_clean: int):
        """Alg. 2: adversarial images for the batch and the mask labels M_b of the training batch."""
        first = 0 if self.division in ("ddcat", "ddcat-m") else n_clean
        clean = images[first:]
        tap = CleanPredictionTap(model, clean)
        adv = self.attack(tap, clean, labels[first:])
        b_clean = tap.b_clean if tap.b_clean is not None else predict_combined(model, clean)
        b_adv = predict_combined(model, adv)
        m_clean, m_adv = mask_labels(self.division, b_clean, b_adv)
        # rows of the attacked block: [first, m); the training batch takes clean rows [0, n_clean)
        # and adversarial rows [n_clean, m).
        k = n_clean - first
        if first == 0:
            targets = torch.cat([m_clean[:k], m_adv[k:]])
        else:  # ddcat-n: clean rows were not attacked and their mask label is 0 by definition
            targets = torch.cat([torch.zeros_like(labels[:n_clean]), m_adv])
        return adv[k:], targets

    def loss(self, net, model, images, labels):
        n_clean, n_adv = adversarial_split(images.shape[0], self.cfg["train"]["adv_fraction"], self.name)
        adv, targets = self.mask_targets(model, images, labels, n_clean)
        out = net(torch.cat([images[:n_clean], adv]))
        p = routing(out["mask"]).detach()
        q = 1 - p
        l_n = routed_cross_entropy(out["main"], labels, q)
        l_a = routed_cross_entropy(out["auxiliary"], labels, p)
        l_m = mask_loss(out["mask"], targets, labels, ignore_void=self.mask_ignore)
        deep = cross_entropy(out["deep_sup"], labels)
        w_n, w_a, w_m = self.lambdas
        loss = w_n * l_n + w_a * l_a + w_m * l_m + self.deep_sup_weight * deep
        valid = labels != 255
        clean_valid = valid[:n_clean]
        stats = {
            "loss": loss.item(),
            "loss_main": l_n.item(),
            "loss_aux": l_a.item(),
            "loss_mask": l_m.item(),
            "loss_deep_sup": deep.item(),
            # share of valid clean pixels the mask head sends to f_a (p = 1), and of mask labels = 1
            "routed_aux_clean": _share(p[:n_clean], clean_valid),
            "routed_aux_adv": _share(p[n_clean:], valid[n_clean:]),
            "mask_pos_clean": _share(targets[:n_clean], clean_valid),
            "mask_pos_adv": _share(targets[n_clean:], valid[n_clean:]),
        }
        return loss, stats


def _share(values: torch.Tensor, valid: torch.Tensor) -> float:
    n = int(valid.sum())
    return float((values.bool() & valid).sum()) / n if n else 0.0
