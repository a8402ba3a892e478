"""A watch for false robustness during training (``train.robust_check_every: N``).

Single-step adversarial training can overfit catastrophically (Wong et al. 2020, Sec. 5; Kim et al.
2021): within a few iterations the model becomes robust to its own training attack and to nothing
else, PGD accuracy falling to about 0. Only a stronger attack during training shows it. Every N
iterations the watch evaluates a FIXED held-out batch (the first ``train.robust_check_images``
validation images, 16 by default) with the model in eval mode:

- clean: pixel accuracy (aAcc) and mIoU;
- PGD-10 with a uniform random start at the training budget (attack.eps, attack.alpha), seed 0;
- the training attack itself (the method's attack; FGSM at eps for ``free``), seed 0;

and logs ``robust_{clean,pgd,train}_{acc,miou}`` in that iteration's record of the training log.
A run whose PGD accuracy falls below half of its accuracy under the training attack gets a
``warning`` field in the record and a ``ddcat: warning: ...`` line on stderr (it does not stop).

The watch draws no number from a global RNG and changes no parameter or buffer (eval mode,
input gradients only), so a run with the watch on trains exactly the weights of one without it, and
a resumed run repeats the same checks. Cost: 1 + 11 + (training attack's steps + 1) forwards on the
watched images, every N iterations, on rank 0 only.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch
from torch import nn

from ddcat import trainlog as log_keys
from ddcat.attacks import PGD
from ddcat.attacks.forward import eval_mode
from ddcat.metrics import ConfusionMatrix

#: PGD of the watch: 10 steps from a random start (the issue's and Wong et al.'s check).
WATCH_PGD_STEPS = 10
#: the warning fires when PGD accuracy < WARN_RATIO x the accuracy under the training attack
WARN_RATIO = 0.5


def overfitting_warning(pgd_acc: float, train_acc: float, ratio: float = WARN_RATIO) -> bool:
    """Catastrophic overfitting: accuracy under PGD below ``ratio`` x that under the training attack."""
    return pgd_acc < ratio * train_acc


def fixed_batches(dataset, count: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` images of ``dataset`` in batches of at most ``batch_size`` images of one
    shape (validation images of list datasets differ in size)."""
    batches: list[tuple[list, list]] = []
    for i in range(min(count, len(dataset))):
        image, label = dataset[i]
        if not batches or len(batches[-1][0]) >= batch_size or batches[-1][0][0].shape != image.shape:
            batches.append(([], []))
        batches[-1][0].append(image)
        batches[-1][1].append(label)
    return [(torch.stack(x), torch.stack(y)) for x, y in batches]


class RobustnessWatch:
    """Clean / PGD-10 / training-attack accuracy and mIoU on fixed held-out batches.

    ``batches``: from :func:`fixed_batches`; ``attack``: the training attack (None for clean
    training: only clean and PGD are logged); ``eps`` / ``alpha``: the PGD budget;
    ``attack_context``: the precision context the attacks run in (``attack.precision``)."""

    def __init__(self, batches, num_classes: int, attack, eps: float, alpha: float, precision: str = "fp32", attack_context=None):
        self.batches = batches
        self.num_classes = num_classes
        self.pgd = PGD(eps=eps, alpha=alpha, steps=WATCH_PGD_STEPS, random_start=True, seed=0, precision=precision)
        self.attack = attack
        self.attack_context = attack_context

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        cms = {name: ConfusionMatrix(self.num_classes) for name in ("clean", "pgd", "train")}
        with eval_mode(model):
            for images, labels in self.batches:
                images, labels = images.to(device), labels.to(device)
                with torch.no_grad():
                    cms["clean"].update(model(images).argmax(1), labels)
                for name, attack in (("pgd", self.pgd), ("train", self.attack)):
                    if attack is None:
                        continue
                    ctx = self.attack_context(images) if self.attack_context else contextlib.nullcontext()
                    with ctx:
                        adv = attack(model, images, labels, seed=0)
                    with torch.no_grad():
                        cms[name].update(model(adv).argmax(1), labels)
        record: dict[str, Any] = {}
        for name, key_acc, key_miou in (
            ("clean", log_keys.ROBUST_CLEAN_ACC, log_keys.ROBUST_CLEAN_MIOU),
            ("pgd", log_keys.ROBUST_PGD_ACC, log_keys.ROBUST_PGD_MIOU),
            ("train", log_keys.ROBUST_TRAIN_ACC, log_keys.ROBUST_TRAIN_MIOU),
        ):
            if name == "train" and self.attack is None:
                continue
            m = cms[name].compute()
            record[key_acc], record[key_miou] = float(m["aAcc"]), float(m["mIoU"])
        return record


def check_record(record: dict[str, Any], iteration: int) -> dict[str, Any]:
    """Add the catastrophic-overfitting warning to a watch record (and print it) when it applies."""
    pgd, train = record.get(log_keys.ROBUST_PGD_ACC), record.get(log_keys.ROBUST_TRAIN_ACC)
    if pgd is not None and train is not None and overfitting_warning(pgd, train):
        text = (
            f"catastrophic overfitting at iteration {iteration}? pixel accuracy under PGD-{WATCH_PGD_STEPS} "
            f"{pgd:.3f} < {WARN_RATIO} x {train:.3f} under the training attack; evaluate with a strong attack"
        )
        print(f"ddcat: warning: {text}", file=sys.stderr)
        return {**record, log_keys.WARNING: text}
    return record
