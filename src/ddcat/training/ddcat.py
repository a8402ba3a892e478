"""Dynamic divide-and-conquer adversarial training (Alg. 2 and 3) and its ablations.

One iteration, for a batch D_b of m images (first n_c stay clean, last n_a become adversarial):

1. Alg. 2, under ``no_grad`` except for the attack, with the model in eval mode:
   - attack the images whose mask labels or training inputs need an adversarial version
     (all m for ``ddcat`` / ``ddcat-m``, the adversarial part for ``ddcat-n``) using the main
     branch's loss; when the attack starts at the clean images (``attack.starts_at_clean``), its
     first forward (through the ``forward`` seam, :class:`CleanPrediction`) also yields the
     combined prediction B_clean from the f_a / f_m heads on the same trunk features; otherwise
     B_clean costs one separate no-grad forward;
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

import contextlib

import torch
from torch import nn

from ddcat.constants import IGNORE_INDEX
from ddcat.training.base import Method, adversarial_split
from ddcat.training.losses import (
    combine,
    cross_entropy,
    division_masks,
    mask_loss,
    routed_cross_entropy,
    routing,
)

DDC_TRAIN_HEADS = ("main", "auxiliary", "mask")


def combined_labels(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Label map B of the combined output o = o_a p + o_n (1 - p)."""
    return combine(out["main"], out["auxiliary"], routing(out["mask"])).argmax(dim=1)


class CleanPrediction:
    """The forward function DDC-AT gives its training attack (the attacks' ``forward`` seam).

    Its FIRST call also computes the combined prediction B_clean of the images ``rows`` from the
    same trunk features (only the f_a and f_m heads are extra); every call returns the main
    logits only, which is all the attack sees. The first call is at the clean images exactly when
    the attack ``starts_at_clean`` (no random start): only then is it used (see
    :meth:`DivideAndConquerTraining.mask_targets`)."""

    def __init__(self, model: nn.Module, rows: slice = slice(None)):
        self.model = model
        self.rows = rows
        self.b_clean: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.b_clean is not None:
            return self.model(x)
        out = self.model(x, heads=DDC_TRAIN_HEADS, rows={"auxiliary": self.rows, "mask": self.rows})
        with torch.no_grad():
            main = out["main"].detach()[self.rows]
            self.b_clean = combined_labels({"main": main, "auxiliary": out["auxiliary"].detach(), "mask": out["mask"].detach()})
        return out["main"]


def attack_precision(attack: object, x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The precision the attack's forwards run in (``fp32``: autocast off), so that B_adv and a
    separately computed B_clean are predicted exactly like the B_clean the attack's first forward
    yields: under mixed precision a pixel must not count as 'changed' through rounding alone."""
    if getattr(attack, "precision", "fp32") == "fp32":
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


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

    def mask_targets(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, n_clean: int, seed: int | None = None):
        """Alg. 2: adversarial images of the batch and the mask labels M_b of the training batch.

        Which images need what (m images, the first n_c stay clean in the training batch):

        ========  ==============  ======================================================
        division  attacked        boundary property 1[B_clean != B_adv] needed for
        ========  ==============  ======================================================
        ddcat     all m           the clean rows [0, n_c) (M_adv = 0 needs nothing)
        ddcat-m   all m           all m rows (clean rows -> M_clean, the rest -> M_adv)
        ddcat-n   rows [n_c, m)   the adversarial rows (M_clean = 0 needs nothing)
        ========  ==============  ======================================================
        """
        m = images.shape[0]
        first = 0 if self.division in ("ddcat", "ddcat-m") else n_clean
        need = {"ddcat": slice(0, n_clean), "ddcat-m": slice(0, m), "ddcat-n": slice(n_clean, m)}[self.division]
        local = slice(need.start - first, need.stop - first)  # ``need`` within the attacked block
        attacked = images[first:]
        # B_clean from the attack's first forward when that is at the clean images; otherwise (a
        # random start, or an attack of 0 steps) from one separate no-grad forward
        tap = CleanPrediction(model, rows=local) if self.attack.starts_at_clean else None
        adv = self.attack(model, attacked, labels[first:], forward=tap, seed=seed)
        with attack_precision(self.attack, images):
            b_clean = tap.b_clean if tap is not None and tap.b_clean is not None else predict_combined(model, attacked[local])
            b_adv = predict_combined(model, adv[local])
        boundary = torch.zeros_like(labels)
        boundary[need] = (b_clean != b_adv).long()
        m_clean, m_adv = division_masks(self.division, boundary)
        targets = torch.cat([m_clean[:n_clean], m_adv[n_clean:]])
        return adv[n_clean - first :], targets

    def loss(self, net, model, images, labels, seed=None):
        n_clean, n_adv = adversarial_split(images.shape[0], self.cfg["train"]["adv_fraction"], self.name)
        adv, targets = self.mask_targets(model, images, labels, n_clean, seed=seed)
        out = net(torch.cat([images[:n_clean], adv]))
        p = routing(out["mask"]).detach()
        q = 1 - p
        l_n = routed_cross_entropy(out["main"], labels, q)
        l_a = routed_cross_entropy(out["auxiliary"], labels, p)
        l_m = mask_loss(out["mask"], targets, labels, ignore_void=self.mask_ignore)
        # user models without an auxiliary output have no deep supervision
        deep = cross_entropy(out["deep_sup"], labels) if "deep_sup" in out else None
        w_n, w_a, w_m = self.lambdas
        loss = w_n * l_n + w_a * l_a + w_m * l_m + (self.deep_sup_weight * deep if deep is not None else 0.0)
        valid = labels != IGNORE_INDEX
        clean_valid = valid[:n_clean]
        stats = {
            "loss": loss.item(),
            "loss_main": l_n.item(),
            "loss_aux": l_a.item(),
            "loss_mask": l_m.item(),
            # share of valid clean pixels the mask head sends to f_a (p = 1), and of mask labels = 1
            "routed_aux_clean": _share(p[:n_clean], clean_valid),
            "routed_aux_adv": _share(p[n_clean:], valid[n_clean:]),
            "mask_pos_clean": _share(targets[:n_clean], clean_valid),
            "mask_pos_adv": _share(targets[n_clean:], valid[n_clean:]),
        }
        if deep is not None:
            stats["loss_deep_sup"] = deep.item()
        return loss, stats


def _share(values: torch.Tensor, valid: torch.Tensor) -> float:
    n = int(valid.sum())
    return float((values.bool() & valid).sum()) / n if n else 0.0
