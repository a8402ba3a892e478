"""Evaluate a model on a dataset under a list of *settings* in one pass over the data.

A setting is (attack or None, source model or None): the perturbation is computed on the source
model (the target itself when None: white-box; a substitute: black-box transfer) and the target's
prediction on the perturbed images is scored. Each setting keeps every image's class counts
(:func:`ddcat.metrics.per_image_counts`, at the image's dataset index) and its size-resolved recall
counts; with several processes each rank takes every world-th image and the counts are summed
exactly, so every rank holds the whole dataset's.

Work is shared within a batch: the attacks that declare a ``sweep_key`` (BIM) run once per key for
every step count, and every attack *value* runs at most once per (batch, source): one cache serves
single attacks and the members of every ensemble.

Ensembles (``attack.is_ensemble``: ``worst``, SEA, ``ensemble``) share one protocol
(:mod:`ddcat.attacks.ensemble`): one member loop over that cache; each member's own numbers; the
per-image worst case for pixel accuracy (aAcc: per image the member with the fewest correct pixels
on the target, ties: the earlier member); the greedy dataset-level worst case for mIoU
(:func:`ddcat.metrics.greedy_miou_selection`) over the members (``greedy_pool = "members"``: worst,
SEA) or over every attack of the evaluation at the same eps and source, the BIM sweep, the single
attacks and every ensemble's members included (``greedy_pool = "evaluation"``: ``ensemble``, whose
search starts from the lowest of its candidates and of the pooled ensembles' own greedy selections,
so that its mIoU is never above any attacked setting's of the same eps and source:
:func:`greedy_selections`); which attack won each image; ``mIoU_imagewise``: per image the lowest image mIoU over that pool (exact,
image-wise mIoU decomposes per image); ``size_recall``: that of the per-image worst case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from ddcat import activity
from ddcat.attacks import Attack, member_loop
from ddcat.attacks.registry import name_of
from ddcat.constants import IGNORE_INDEX
from ddcat.distributed import DistContext, all_reduce_sum
from ddcat.errors import DdcatError
from ddcat.evaluation.inference import evaluation_inputs
from ddcat.metrics import (
    SIZE_BINS,
    greedy_miou_selection,
    imagewise_miou,
    metrics_from_counts,
    miou_of_counts,
    per_image_counts,
    size_bin_counts,
    size_bins,
    size_recall,
)

GREEDY_ROUNDS = 10  # rounds of the greedy mIoU selection (5-10 in SEA's paper; they rarely all run)


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
    norm: str = "linf"  # the threat model: linf | l2 (recorded)

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
    """Single attacks first, then the ensembles that pool their members (their members may equal
    the single attacks), then those that pool the whole evaluation."""
    if s.attack is None or not s.attack.is_ensemble:
        return 0
    return 2 if getattr(s.attack, "greedy_pool", "members") == "evaluation" else 1


class PerImage:
    """Per-image class counts ``(N, 3, K)`` and size-bin counts ``(N, 2, B)`` of one prediction
    set, at the images' dataset indices (zeros elsewhere: other ranks' images)."""

    def __init__(self, num_images: int, num_classes: int) -> None:
        self.counts = torch.zeros(num_images, 3, num_classes, dtype=torch.int64)
        self.sizes = torch.zeros(num_images, 2, len(SIZE_BINS), dtype=torch.int64)
        self.num_classes = num_classes

    def add(self, indices: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor, bins: torch.Tensor) -> None:
        self.counts[indices] = per_image_counts(pred, labels, self.num_classes)
        self.sizes[indices] = torch.stack([size_bin_counts(bins[i:i + 1], pred[i:i + 1], labels[i:i + 1]) for i in range(len(indices))])

    def reduce(self, ctx: DistContext) -> "PerImage":
        self.counts = all_reduce_sum(self.counts.clone(), ctx)
        self.sizes = all_reduce_sum(self.sizes.clone(), ctx)
        return self


def image_metrics(counts: torch.Tensor, sizes: torch.Tensor) -> dict[str, Any]:
    """A record's metrics from per-image counts: the dataset metrics of their sum, the image-wise
    mIoU and the size-resolved recall."""
    return {
        **metrics_from_counts(counts.sum(0)),
        "mIoU_imagewise": imagewise_miou(counts),
        "size_recall": size_recall(sizes.sum(0)),
    }


class EnsembleAccumulator:
    """Per-image counts of every member of one ensemble setting (their predictions on the target),
    the images each member skipped (early skip), and the per-image worst case for pixel accuracy."""

    def __init__(self, names: list[str], num_images: int, num_classes: int) -> None:
        self.names = names
        self.members = [PerImage(num_images, num_classes) for _ in names]
        self.skipped = torch.zeros(len(names), num_images, dtype=torch.int64)

    def add(self, indices, preds: list[torch.Tensor], skipped: list[torch.Tensor], labels, bins) -> torch.Tensor:
        """Record the batch; returns the per-image worst prediction (fewest correct valid pixels,
        ties: the earlier member)."""
        for acc, pred, skip in zip(self.members, preds, skipped):
            acc.add(indices, pred, labels, bins)
        for a, skip in enumerate(skipped):
            self.skipped[a, indices] = skip.cpu().long()
        correct = torch.stack([acc.counts[indices, 0].sum(-1) for acc in self.members])  # (A, B)
        choice = correct.argmin(dim=0).to(preds[0].device)  # argmin: the first minimum
        stacked = torch.stack(preds)
        return stacked.gather(0, choice.view(1, -1, 1, 1).expand(1, *stacked.shape[1:]))[0]

    def reduce(self, ctx: DistContext) -> "EnsembleAccumulator":
        for acc in self.members:
            acc.reduce(ctx)
        self.skipped = all_reduce_sum(self.skipped.clone(), ctx)
        return self


def ensemble_record(
    attack: Attack, acc: EnsembleAccumulator, pool: list[tuple[str, PerImage]], labelled: torch.Tensor, choice: torch.Tensor
) -> dict[str, Any]:
    """What an ensemble setting reports (module docstring): ``pool`` = the (name, per-image counts)
    the greedy mIoU selection chose from, the members first; ``labelled`` ``(N,)`` bool: the
    images with a labelled pixel; ``choice`` ``(N,)``: the greedy selection, an index into ``pool``
    per image (:func:`greedy_selections`)."""
    members = acc.members
    n = members[0].counts.shape[0]
    rows = torch.arange(n)
    correct = torch.stack([m.counts[:, 0].sum(-1) for m in members])  # (A, N)
    worst = correct.argmin(dim=0)
    per_image_counts_ = torch.stack([m.counts for m in members])[worst, rows]
    per_image_sizes = torch.stack([m.sizes for m in members])[worst, rows]
    per_image = metrics_from_counts(per_image_counts_.sum(0))
    pool_counts = torch.stack([p.counts for _, p in pool])  # (P, N, 3, K)
    greedy = metrics_from_counts(pool_counts[choice, rows].sum(0))
    image_miou = miou_of_counts(pool_counts)  # (P, N)
    lowest = image_miou[:, labelled].min(0).values if bool(labelled.any()) else None
    pool_names = [name for name, _ in pool]
    won_acc = torch.bincount(worst[labelled], minlength=len(members)).tolist()
    won_miou = torch.bincount(choice[labelled], minlength=len(pool)).tolist()
    early = bool(getattr(attack, "early_skip", False))
    record = {
        **greedy,
        "aAcc": per_image["aAcc"],
        "mIoU_imagewise": float(lowest.mean()) if lowest is not None else None,
        "size_recall": size_recall(per_image_sizes.sum(0)),
        "worst_case": "aAcc, size_recall: per-image worst case over the members; mIoU, mIoU_all, mAcc, per_class_iou: "
        f"greedy dataset-level worst case for mIoU over greedy_pool ({GREEDY_ROUNDS} rounds at most); "
        "mIoU_imagewise: per image the lowest image mIoU over greedy_pool",
        "greedy": greedy,
        "per_image_worst": per_image,
        "greedy_pool": pool_names,
        "members": [
            {"name": name, **image_metrics(m.counts, m.sizes), **({"skipped_images": int(acc.skipped[a].sum())} if early else {})}
            for a, (name, m) in enumerate(zip(acc.names, members))
        ],
        "winners": {
            "aAcc": {name: c for name, c in zip(acc.names, won_acc) if c},
            "mIoU": {name: c for name, c in zip(pool_names, won_miou) if c},
        },
    }
    version = getattr(attack, "version", None)
    if version is not None:
        record["ensemble"] = {"version": version, "members": list(acc.names), "early_skip": early}
        if isinstance(getattr(attack, "box", None), str):  # how its minimum-norm members met eps
            record["ensemble"]["box"] = attack.box
    return record


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
    """Score ``target`` under every setting; one record per setting with mIoU, mAcc, aAcc,
    mIoU_imagewise, size_recall, ... (an ensemble's record: see :func:`ensemble_record`).

    ``target`` and every source model are inference paths (whole image or sliding window) in eval
    mode. ``on_batch(images, labels, preds)`` sees each batch's predictions (for figures).
    """
    ctx = ctx or DistContext(device=device)
    target.eval()
    total = len(dataset) if not max_images else min(max_images, len(dataset))
    per_image = {s.key(): PerImage(total, num_classes) for s in settings}
    per_crop = bool(getattr(target, "attack_per_crop", False))  # eval.attack_per_crop (docs/protocol.md)
    ensembles = {
        s.key(): EnsembleAccumulator(_member_names(s.attack), total, num_classes)
        for s in settings if s.attack is not None and s.attack.is_ensemble and not per_crop
    }
    sweeps: dict[tuple, list[Setting]] = {}
    for s in settings:
        key = s.attack.sweep_key() if s.attack is not None and not per_crop else None
        if key is not None:
            sweeps.setdefault((s.source, key), []).append(s)
    n_images = 0
    bar = tqdm(total=total, desc=desc, disable=not (progress and ctx.is_main), dynamic_ncols=True, leave=False)
    for images, labels in image_batches(dataset, batch_size, ctx.rank, ctx.world, max_images):
        activity.note(f"evaluating ({desc})", images.shape[0], images.shape[-2:], activity.EVAL_REMEDY)
        images, labels = images.to(device), labels.to(device)
        images, labels = evaluation_inputs(target, images, labels)  # eval.score_at=base: resized
        indices = torch.arange(n_images, n_images + images.shape[0]) * ctx.world + ctx.rank  # dataset indices
        bins = size_bins(labels)
        preds = {}
        done: dict[tuple[str, Attack], torch.Tensor] = {}  # (source, attack value) -> adversarial images
        predicted: dict[tuple[str, Attack], torch.Tensor] = {}  # (source, attack value) -> the target's prediction

        def prediction(source: str, attack: Attack, x: torch.Tensor) -> torch.Tensor:
            if (source, attack) not in predicted:
                predicted[(source, attack)] = predict(target, x)
            return predicted[(source, attack)]

        for group in sweeps.values():  # one run per sweep key and source serves every step count
            first = group[0]
            advs = first.attack.sweep(first.source_model or target, images, labels, [s.steps for s in group])
            for s in group:
                done[(s.source, s.attack)] = advs[s.steps]
        for s in sorted(settings, key=_order):
            if per_crop and s.attack is not None:  # the paper code's window-by-window attack
                pred = target.forward_attacked_per_crop(s.attack, images, labels, source=s.source_model).argmax(dim=1)
            elif s.attack is None:
                pred = predict(target, images)
            elif s.attack.is_ensemble:
                early = bool(getattr(s.attack, "early_skip", False)) and s.source_model is None
                known = {a: x for (src, a), x in done.items() if src == s.source}
                member_preds, skipped = [], []
                for r in member_loop(s.attack.members, s.source_model or target, images, labels, known=known,
                                     early_skip=early, score_known=early):
                    member = s.attack.members[r.index]
                    if not bool(r.skipped.any()):
                        done[(s.source, member)] = r.x
                        member_preds.append(prediction(s.source, member, r.x))
                    else:
                        member_preds.append(predict(target, r.x))
                    skipped.append(r.skipped)
                pred = ensembles[s.key()].add(indices, member_preds, skipped, labels, bins)
            else:
                if (s.source, s.attack) not in done:
                    done[(s.source, s.attack)] = s.attack(s.source_model or target, images, labels)
                pred = prediction(s.source, s.attack, done[(s.source, s.attack)])
            preds[s.key()] = pred
            per_image[s.key()].add(indices, pred, labels, bins)
        if on_batch is not None:
            on_batch(images, labels, preds)
        n_images += images.shape[0]
        bar.update(images.shape[0] * ctx.world)
    bar.close()
    count = all_reduce_sum(torch.tensor([n_images], dtype=torch.int64), ctx)
    for acc in per_image.values():
        acc.reduce(ctx)
    for ens in ensembles.values():
        ens.reduce(ctx)
    if settings and int(per_image[settings[0].key()].counts[:, 1].sum()) == 0:
        raise DdcatError(
            f"the evaluation saw {int(count.item())} images and no labelled pixel (every label is {IGNORE_INDEX} = ignore, or "
            "no image was read): its metrics would be meaningless; check the data and eval.max_images"
        )
    selections = greedy_selections(settings, per_image, ensembles)
    records = []
    for s in settings:
        acc = per_image[s.key()]
        record = {
            "attack": s.attack_name,
            "steps": s.steps,
            "eps": s.eps,
            "source": s.source,
            **({"alpha": s.alpha} if s.alpha is not None else {}),
            **({"norm": s.norm} if s.attack is not None else {}),
            **({"box": s.attack.box} if isinstance(getattr(s.attack, "box", None), str) else {}),
            **image_metrics(acc.counts, acc.sizes),
        }
        if s.key() in ensembles:
            labelled = acc.counts[:, 1].sum(-1) > 0
            pool, choice = selections[s.key()]
            record.update(ensemble_record(s.attack, ensembles[s.key()], pool, labelled, choice))
        record["num_images"] = int(count.item())
        records.append(record)
    return records


def _member_names(attack: Attack) -> list[str]:
    names = list(getattr(attack, "names", ()) or ())
    return names if len(names) == len(attack.members) else [name_of(m) for m in attack.members]


def _seed(attack: Attack) -> int:
    return int(getattr(attack, "seed", 0) or getattr(attack.members[0], "seed", 0) or 0)


def greedy_selections(settings: list[Setting], per_image: dict[tuple, PerImage], ensembles: dict[tuple, EnsembleAccumulator]
                      ) -> dict[tuple, tuple[list[tuple[str, PerImage]], torch.Tensor]]:
    """Every ensemble setting's greedy mIoU selection: key -> (its pool, the pool index chosen per image).

    The ensembles that pool their members (worst, SEA) come first; an ensemble that pools the whole
    evaluation (``ensemble``) then starts its search from the lowest of its single candidates and
    of the selections already made for the ensembles it pools (mapped onto its own pool, where
    their members are), so its mIoU is never above any attacked setting's of the same eps and
    source: a single attack is a candidate, and an ensemble's reported mIoU is its selection's.
    (Among several whole-evaluation ensembles of one eps and source, each later one starts from
    the earlier ones' selections.)"""
    done: dict[tuple, tuple[list[tuple[str, PerImage]], torch.Tensor]] = {}
    for s in sorted((s for s in settings if s.key() in ensembles), key=_order):
        pool, starts = _pool(s, settings, per_image, ensembles, done)
        counts = torch.stack([p.counts for _, p in pool])
        choice, _ = greedy_miou_selection(counts, GREEDY_ROUNDS, _seed(s.attack), starts=starts)
        done[s.key()] = (pool, choice)
    return done


def _pool(s: Setting, settings: list[Setting], per_image: dict[tuple, PerImage], ensembles: dict[tuple, EnsembleAccumulator],
          done: dict[tuple, tuple[list[tuple[str, PerImage]], torch.Tensor]]
          ) -> tuple[list[tuple[str, PerImage]], list[torch.Tensor]]:
    """What the greedy mIoU selection of ensemble setting ``s`` chooses from and where it may start:
    its members, and with ``greedy_pool == "evaluation"`` every other attacked setting at the same
    eps and source (each ensemble's result and its members included); the starts are the
    selections in ``done`` of the pooled ensembles, as indices into this pool (an entry of theirs
    that this pool lacks joins it, named ``NAME-STEPS/...``)."""
    own = ensembles[s.key()]
    pool = list(zip(own.names, own.members))
    if getattr(s.attack, "greedy_pool", "members") != "evaluation":
        return pool, []
    pooled = []
    for t in settings:
        if t.attack is None or t.key() == s.key() or t.eps != s.eps or t.source != s.source:
            continue
        pool.append((f"{t.attack_name}-{t.steps}", per_image[t.key()]))
        if t.key() in ensembles:
            pool += [(f"{t.attack_name}-{t.steps}/{name}", m) for name, m in zip(ensembles[t.key()].names, ensembles[t.key()].members)]
            pooled.append(t)
    starts = []
    index = {id(acc): i for i, (_, acc) in reversed(list(enumerate(pool)))}  # the first entry of each object
    for t in (t for t in pooled if t.key() in done):
        their_pool, their_choice = done[t.key()]
        mapping = []
        for name, acc in their_pool:
            if id(acc) not in index:
                index[id(acc)] = len(pool)
                pool.append((name if "/" in name else f"{t.attack_name}-{t.steps}/{name}", acc))
            mapping.append(index[id(acc)])
        starts.append(torch.tensor(mapping, dtype=torch.int64)[their_choice])
    return pool, starts
