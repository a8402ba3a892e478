"""Evaluate a model on a dataset under a list of *settings* in one pass over the data.

A setting is (attack or None, source model or None): the perturbation is computed on the source
model (the target itself when None: white-box; a substitute: black-box transfer) and the target's
prediction on the perturbed images is scored. Each setting accumulates its own confusion matrix;
with several processes each rank takes every world-th image and the matrices are summed exactly.

Work is shared within a batch: the BIM step counts of one (source, eps, alpha) come from one
longest run, and every attack *value* runs at most once per (batch, source): SEA's members, a
standalone APGD equal to one of them, and the members of a per-image worst case (``worst``, or a
:class:`~ddcat.attacks.WorstCase` over SEA's members) reuse results already computed.

SEA (:class:`~ddcat.attacks.SEA`) is reported as in Croce, Singh & Hein (2024): each member's own
numbers, the per-image worst case for pixel accuracy (aAcc) and the greedy dataset-level worst
case for mIoU (:func:`~ddcat.attacks.greedy_miou_selection` over every image's confusion matrix
under every member; with several processes the per-image matrices are summed into a dataset-sized
tensor on every rank, so each rank makes the same selection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from ddcat.attacks import APGD, BIM, SEA, Attack, WorstCase, greedy_miou_selection, per_image_confusions
from ddcat.constants import IGNORE_INDEX
from ddcat.distributed import DistContext, all_reduce_sum
from ddcat.errors import DdcatError
from ddcat.evaluation.inference import evaluation_inputs
from ddcat.metrics import ConfusionMatrix, metrics_from_confusion

GREEDY_ROUNDS = 10  # rounds of SEA's greedy mIoU selection (5-10 in the paper; they rarely all run)


@dataclass
class Setting:
    """One row of the results: how the inputs are perturbed before the target sees them."""

    attack_name: str = "clean"
    attack: Attack | None = None
    steps: int = 0  # step count (sweep attacks) or iteration budget (APGD, each SEA member)
    eps: float = 0.0
    source: str = "self"
    source_model: nn.Module | None = None
    alpha: float | None = None  # the step size of the attacks that have one (recorded)

    def key(self) -> tuple:
        return (self.attack_name, self.steps, self.eps, self.source)


def image_batches(dataset, batch_size: int, rank: int = 0, world: int = 1, max_images: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of same-sized images (this rank's share: images rank, rank + world, ...), in dataset order."""
    n = len(dataset) if not max_images else min(max_images, len(dataset))
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index in range(rank, n, world):
        image, label = dataset[index]
        if pending and (pending[0][0].shape != image.shape or len(pending) == batch_size):
            yield torch.stack([p[0] for p in pending]), torch.stack([p[1] for p in pending])
            pending = []
        pending.append((image, label))
    if pending:
        yield torch.stack([p[0] for p in pending]), torch.stack([p[1] for p in pending])


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images).argmax(dim=1)


def _order(s: Setting) -> int:
    """Single attacks first, then SEA (its members may equal them), then the worst cases (which reuse all)."""
    return 2 if isinstance(s.attack, WorstCase) else 1 if isinstance(s.attack, SEA) else 0


class EnsembleAccumulator:
    """Per-image confusion matrices of every member of one SEA setting, placed at the images'
    dataset indices, and the per-image worst case (fewest correct pixels, ties: the first member)."""

    def __init__(self, members: int, num_images: int, num_classes: int) -> None:
        self.confusions = torch.zeros(members, num_images, num_classes, num_classes, dtype=torch.int64)
        self.num_classes = num_classes

    def add(self, indices: torch.Tensor, preds: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Record the batch (``preds[a]``: the target's prediction under member ``a``); returns the
        per-image worst prediction (fewest correctly classified valid pixels)."""
        conf = torch.stack([per_image_confusions(p, labels, self.num_classes) for p in preds])  # (A, B, K, K)
        self.confusions[:, indices] = conf
        correct = conf.diagonal(dim1=-2, dim2=-1).sum(-1)  # (A, B)
        choice = correct.argmin(dim=0).to(preds[0].device)  # argmin: the first minimum
        stacked = torch.stack(preds)  # (A, B, H, W)
        return stacked.gather(0, choice.view(1, -1, 1, 1).expand(1, *stacked.shape[1:]))[0]

    def record(self, ctx: DistContext, members: tuple[APGD, ...], seed: int) -> dict[str, Any]:
        """Members' numbers, the per-image worst aAcc and the greedy mIoU, over the whole dataset."""
        conf = all_reduce_sum(self.confusions.clone(), ctx)  # every rank filled its own images
        per_member = [metrics_from_confusion(conf[a].sum(0)) for a in range(conf.shape[0])]
        correct = conf.diagonal(dim1=-2, dim2=-1).sum(-1)  # (A, N)
        worst = correct.argmin(dim=0)
        per_image = metrics_from_confusion(conf[worst, torch.arange(conf.shape[1])].sum(0))
        choice, _ = greedy_miou_selection(conf, GREEDY_ROUNDS, seed)
        greedy = metrics_from_confusion(conf[choice, torch.arange(conf.shape[1])].sum(0))
        names = [f"apgd-{m.loss}" for m in members]
        return {
            **greedy,
            "aAcc": per_image["aAcc"],
            "worst_case": "aAcc: per-image worst case over the members; mIoU, mIoU_all, mAcc, per_class_iou: "
            f"greedy dataset-level worst case for mIoU ({GREEDY_ROUNDS} rounds at most)",
            "greedy": greedy,
            "per_image_worst": per_image,
            "members": [{"name": name, **metrics} for name, metrics in zip(names, per_member)],
        }


def evaluate(
    target: nn.Module,
    dataset,
    settings: list[Setting],
    num_classes: int,
    device: torch.device,
    batch_size: int = 8,
    max_images: int = 0,
    ctx: DistContext | None = None,
    progress: bool = True,
    desc: str = "eval",
    on_batch: Callable[[torch.Tensor, torch.Tensor, dict[tuple, torch.Tensor]], None] | None = None,
) -> list[dict[str, Any]]:
    """Score ``target`` under every setting; one record per setting with mIoU, mAcc, aAcc, ...
    (SEA's record: see :class:`EnsembleAccumulator`).

    ``target`` and every source model are inference paths (whole image or sliding window) in eval
    mode. ``on_batch(images, labels, preds)`` sees each batch's predictions (for figures).
    """
    ctx = ctx or DistContext(device=device)
    target.eval()
    total = len(dataset) if not max_images else min(max_images, len(dataset))
    matrices = {s.key(): ConfusionMatrix(num_classes) for s in settings}
    ensembles = {s.key(): EnsembleAccumulator(len(s.attack.members), total, num_classes) for s in settings if isinstance(s.attack, SEA)}
    per_crop = bool(getattr(target, "attack_per_crop", False))  # eval.attack_per_crop (docs/protocol.md)
    if per_crop and ensembles:
        raise DdcatError("eval.attack_per_crop reproduces the paper code's crop-by-crop BIM; it does not run sea (attack whole images)")
    sweeps: dict[tuple, list[Setting]] = {}
    for s in settings:
        if type(s.attack) is BIM and not s.attack.targeted and not per_crop:
            sweeps.setdefault((s.source, s.attack.eps, s.attack.alpha, s.attack.precision), []).append(s)
    n_images = 0
    bar = tqdm(total=total, desc=desc, disable=not (progress and ctx.is_main), dynamic_ncols=True, leave=False)
    for images, labels in image_batches(dataset, batch_size, ctx.rank, ctx.world, max_images):
        images, labels = images.to(device), labels.to(device)
        images, labels = evaluation_inputs(target, images, labels)  # eval.score_at=base: resized
        indices = torch.arange(n_images, n_images + images.shape[0]) * ctx.world + ctx.rank  # dataset indices
        preds = {}
        done: dict[tuple[str, Attack], torch.Tensor] = {}  # (source, attack value) -> adversarial images

        def attacked(s: Setting, attack: Attack) -> torch.Tensor:
            if (s.source, attack) not in done:
                done[(s.source, attack)] = attack(s.source_model or target, images, labels)
            return done[(s.source, attack)]

        for group in sweeps.values():  # BIM step counts of one (source, eps, alpha): one longest run
            first = group[0]
            advs = first.attack.sweep(first.source_model or target, images, labels, [s.steps for s in group])
            for s in group:
                done[(s.source, s.attack)] = advs[s.steps]
        for s in sorted(settings, key=_order):
            if per_crop and s.attack is not None:  # the paper code's window-by-window attack
                attack = (lambda m, x, y, a=s.attack: a.run(m, x, y)[0]) if isinstance(s.attack, WorstCase) else s.attack
                preds[s.key()] = target.forward_attacked_per_crop(attack, images, labels, source=s.source_model).argmax(dim=1)
                matrices[s.key()].update(preds[s.key()], labels)
                continue
            if s.attack is None:
                pred = predict(target, images)
            elif isinstance(s.attack, SEA):
                member_preds = [predict(target, attacked(s, m)) for m in s.attack.members]
                pred = ensembles[s.key()].add(indices, member_preds, labels)
            elif isinstance(s.attack, WorstCase):
                known = {a: x for (src, a), x in done.items() if src == s.source}
                inputs, _ = s.attack.run(s.source_model or target, images, labels, known=known)
                done[(s.source, s.attack)] = inputs
                pred = predict(target, inputs)
            else:
                pred = predict(target, attacked(s, s.attack))
            preds[s.key()] = pred
            matrices[s.key()].update(pred, labels)
        if on_batch is not None:
            on_batch(images, labels, preds)
        n_images += images.shape[0]
        bar.update(images.shape[0] * ctx.world)
    bar.close()
    count = all_reduce_sum(torch.tensor([n_images], dtype=torch.int64), ctx)
    totals = {s.key(): all_reduce_sum(matrices[s.key()].matrix.clone(), ctx) for s in settings}
    if settings and int(totals[settings[0].key()].sum()) == 0:
        raise DdcatError(
            f"the evaluation saw {int(count.item())} images and no labelled pixel (every label is {IGNORE_INDEX} = ignore, or "
            "no image was read): its metrics would be meaningless; check the data and eval.max_images"
        )
    records = []
    for s in settings:
        matrix = totals[s.key()]
        record = {
            "attack": s.attack_name,
            "steps": s.steps,
            "eps": s.eps,
            "source": s.source,
            **({"alpha": s.alpha} if s.alpha is not None else {}),
            **metrics_from_confusion(matrix),
        }
        if isinstance(s.attack, SEA):
            record.update(ensembles[s.key()].record(ctx, s.attack.members, s.attack.seed))
        record["num_images"] = int(count.item())
        records.append(record)
    return records
