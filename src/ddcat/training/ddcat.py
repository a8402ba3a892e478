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
   - mask labels from the division's :meth:`ddcat.training.losses.Division.mask_labels` (B_clean
     and B_adv outside the rows that need them are left equal, so their boundary property is 0);
     which rows are attacked and which need B_adv is the division's too.
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

from ddcat import trainlog as log_keys
from ddcat.constants import IGNORE_INDEX
from ddcat.errors import DdcatError
from ddcat.training.base import AdversarialMethod
from ddcat.training.losses import (
    Division,
    combine,
    cross_entropy,
    division_of,
    mask_loss,
    routed_cross_entropy,
    routing,
)

#: The heads whose outputs make the combined prediction o = o_a p + o_n (1 - p) and its label map B.
COMBINED_PREDICTION_HEADS = ("main", "auxiliary", "mask")


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
        out = self.model(x, heads=COMBINED_PREDICTION_HEADS, rows={"auxiliary": self.rows, "mask": self.rows})
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
        return combined_labels(model(images, heads=COMBINED_PREDICTION_HEADS))
    finally:
        model.train(was_training)


class DivideAndConquerTraining(AdversarialMethod):
    """``ddcat`` (the paper's division), ``ddcat-m`` and ``ddcat-n`` (Sec. 6.4 ablations).

    ``lambdas``: the weights (l1, l2, l3) of L_n, L_a and L_m in eq. 6 (1, 1, 1 in the paper);
    ``mask_ignore``: leave pixels of the ignore label out of L_m (the paper's code counts them)."""

    needs_ddc_heads = True

    def __init__(
        self,
        attack,
        division: str | Division,
        adv_fraction: float,
        deep_sup_weight: float,
        lambdas: tuple[float, float, float],
        mask_ignore: bool,
    ):
        super().__init__(attack, adv_fraction, deep_sup_weight)
        self.division = division_of(division)
        self.name = self.division.name
        self.lambdas = tuple(lambdas)
        self.mask_ignore = mask_ignore

    def split(self, batch: int) -> tuple[int, int]:
        """Both parts must be non-empty: the mask labels need clean and adversarial images."""
        n_clean, n_adv = super().split(batch)
        if n_clean == 0 or n_adv == 0:
            raise DdcatError(
                f"--method {self.name} needs clean and adversarial images in every batch: a batch of {batch} "
                f"with train.adv_fraction={self.adv_fraction} gives {n_clean} clean and {n_adv} adversarial"
            )
        return n_clean, n_adv

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
        first = self.division.attacked_rows(n_clean, m).start
        need = self.division.boundary_rows(n_clean, m)
        local = slice(need.start - first, need.stop - first)  # ``need`` within the attacked block
        attacked = images[first:]
        # B_clean from the attack's first forward when that is at the clean images; otherwise (a
        # random start, or an attack of 0 steps) from one separate no-grad forward
        tap = CleanPrediction(model, rows=local) if self.attack.starts_at_clean else None
        with self.attack_context(images):  # attack.precision bf16: B_clean and B_adv in bf16 too
            adv = self.attack(model, attacked, labels[first:], forward=tap, seed=seed)
        with self.attack_context(images), attack_precision(self.attack, images):
            b_clean = tap.b_clean if tap is not None and tap.b_clean is not None else predict_combined(model, attacked[local])
            b_adv = predict_combined(model, adv[local])
        # label maps of the whole batch, equal outside ``need`` (no boundary property there)
        b_clean_all, b_adv_all = torch.zeros_like(labels), torch.zeros_like(labels)
        b_clean_all[need], b_adv_all[need] = b_clean, b_adv
        m_clean, m_adv = self.division.mask_labels(b_clean_all, b_adv_all)
        targets = torch.cat([m_clean[:n_clean], m_adv[n_clean:]])
        return adv[n_clean - first :], targets

    def loss(self, net, model, images, labels, seed=None):
        n_clean, _ = self.split(images.shape[0])
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
            log_keys.LOSS: loss.item(),
            log_keys.LOSS_MAIN: l_n.item(),
            log_keys.LOSS_AUX: l_a.item(),
            log_keys.LOSS_MASK: l_m.item(),
            # share of valid clean pixels the mask head sends to f_a (p = 1), and of mask labels = 1
            log_keys.ROUTED_AUX_CLEAN: _share(p[:n_clean], clean_valid),
            log_keys.ROUTED_AUX_ADV: _share(p[n_clean:], valid[n_clean:]),
            log_keys.MASK_POS_CLEAN: _share(targets[:n_clean], clean_valid),
            log_keys.MASK_POS_ADV: _share(targets[n_clean:], valid[n_clean:]),
        }
        if deep is not None:
            stats[log_keys.LOSS_DEEP_SUP] = deep.item()
        return loss, stats


def _share(values: torch.Tensor, valid: torch.Tensor) -> float:
    n = int(valid.sum())
    return float((values.bool() & valid).sum()) / n if n else 0.0
