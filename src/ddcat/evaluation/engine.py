"""Evaluate a model on a dataset under a list of *settings* in one pass over the data.

A setting is (attack or None, source model or None): the perturbation is computed on the source
model (the target itself when None: white-box; a substitute: black-box transfer) and the target's
prediction on the perturbed images is scored. Each setting accumulates its own confusion matrix;
with several processes each rank takes every world-th image and the matrices are summed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from ddcat.attacks import BIM, WorstCase
from ddcat.distributed import DistContext, all_reduce_sum
from ddcat.metrics import ConfusionMatrix


@dataclass
class Setting:
    """One row of the results: how the inputs are perturbed before the target sees them."""

    attack_name: str = "clean"
    attack: Callable | None = None
    steps: int = 0
    eps: float = 0.0
    source: str = "self"
    source_model: nn.Module | None = None
    alpha: float | None = None  # the step size of the attacks that have one (recorded)

    def key(self) -> tuple:
        return (self.attack_name, self.steps, self.eps, self.source)


def image_batches(dataset, batch_size: int, rank: int = 0, world: int = 1, max_images: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of same-sized images (this rank's share), in dataset order."""
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

    ``target`` and every source model are inference paths (whole image or sliding window) in eval
    mode. ``on_batch(images, labels, preds)`` sees each batch's predictions (for figures).
    """
    ctx = ctx or DistContext(device=device)
    target.eval()
    matrices = {s.key(): ConfusionMatrix(num_classes) for s in settings}
    sweeps: dict[tuple, list[Setting]] = {}
    for s in settings:
        if type(s.attack) is BIM and not s.attack.targeted:
            sweeps.setdefault((s.source, s.attack.eps, s.attack.alpha), []).append(s)
    n_images = 0
    total = len(dataset) if not max_images else min(max_images, len(dataset))
    bar = tqdm(total=total, desc=desc, disable=not (progress and ctx.is_main), dynamic_ncols=True, leave=False)
    for images, labels in image_batches(dataset, batch_size, ctx.rank, ctx.world, max_images):
        images, labels = images.to(device), labels.to(device)
        preds = {}
        done: dict[tuple[str, str], torch.Tensor] = {}  # (source, repr(attack)) -> adversarial images
        for group in sweeps.values():  # BIM step counts of one (source, eps, alpha): one longest run
            first = group[0]
            advs = first.attack.sweep(first.source_model or target, images, labels, [s.steps for s in group])
            for s in group:
                done[(s.source, repr(BIM(s.attack.eps, s.attack.alpha, s.steps)))] = advs[s.steps]
        for s in sorted(settings, key=lambda s: isinstance(s.attack, WorstCase)):  # worst case last
            model = s.source_model or target
            if s.attack is None:
                inputs = images
            elif (s.source, repr(s.attack)) in done:
                inputs = done[(s.source, repr(s.attack))]
            elif isinstance(s.attack, WorstCase):
                known = {a: x for (src, a), x in done.items() if src == s.source}
                inputs, _ = s.attack.run(model, images, labels, known=known)
            else:
                inputs = s.attack(model, images, labels)
            done[(s.source, repr(s.attack))] = inputs
            preds[s.key()] = predict(target, inputs)
            matrices[s.key()].update(preds[s.key()], labels)
        if on_batch is not None:
            on_batch(images, labels, preds)
        n_images += images.shape[0]
        bar.update(images.shape[0] * ctx.world)
    bar.close()
    count = all_reduce_sum(torch.tensor([n_images], dtype=torch.int64), ctx)
    records = []
    for s in settings:
        matrix = all_reduce_sum(matrices[s.key()].matrix.clone(), ctx)
        cm = ConfusionMatrix(num_classes)
        cm.matrix = matrix
        records.append({
            "attack": s.attack_name,
            "steps": s.steps,
            "eps": s.eps,
            "source": s.source,
            **({"alpha": s.alpha} if s.alpha is not None else {}),
            **cm.compute(),
            "num_images": int(count.item()),
        })
    return records
