"""CERTIFY of SegCertify (Fischer, Baader & Vechev, ICML 2021, Alg. 1) over a dataset.

Threat model: L2 perturbations of norm < R = sigma * Phi^-1(tau) of the [0, 1] image (before the
model's normalisation); the guarantee holds with probability >= 1 - alpha per image.

For one image x (3, H, W) with labels y (H, W):

1. n0 *selection* samples f(x + eps_j), eps_j ~ N(0, sigma^2 I) (no clipping), give each pixel's
   class c_i, the most frequent one (ties: the lowest class index);
2. n fresh *estimation* samples give n_i, the number of times pixel i is c_i (and the class counts
   of every pixel: the smoothed prediction without a certificate is their argmax);
3. per labelled pixel (y_i != 255) the p-value P[Bin(n, tau) >= n_i] of H0: P(c_i) <= tau;
   Holm or Bonferroni over the image's labelled pixels at level alpha; a pixel whose H0 is not
   rejected abstains.

Noise: every sample gets its own draw from a generator seeded by ``sample_seed(seed, image, phase,
j)`` (a counter-based splitmix64 hash of the dataset index of the image, the phase (selection 0,
estimation 1) and the sample index j), so results depend on ``seed`` and the device's generator
only: not on the batch size (``batch_size`` samples go through the model at once, which bounds
memory), nor on the number of processes (rank r of W takes images r, r + W, ...). The published
code reused one draw per GPU batch; here no two samples share a draw.

Several tau values reuse the same samples: each record is a valid certificate at its own tau (the
guarantee is per record, not jointly over the records).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch
from torch import nn
from tqdm import tqdm

from ddcat import activity
from ddcat.certification.smoothing import CORRECTIONS, binomial_log_sf_table, certified_radius, min_samples, reject
from ddcat.constants import IGNORE_INDEX
from ddcat.distributed import DistContext, all_reduce_sum
from ddcat.errors import DdcatError
from ddcat.evaluation.inference import evaluation_inputs

THREAT_MODEL = "L2 ball of radius R = sigma * Phi^-1(tau) around the [0, 1] image; holds with probability >= 1 - alpha per image"
ABSTAIN = -1
_M64 = (1 << 64) - 1
#: The version of what a certification computes (noise, statistics, record fields): part of the
#: result cache key of ``ddcat experiment``, so that a change here is never served a stale cache.
CERTIFY_VERSION = 2


def _under_torchrun() -> bool:
    """True in a process torchrun started (its elastic agent sets TORCHELASTIC_RUN_ID, every rank
    LOCAL_RANK): there the CLI's ``--n`` must be written ``--num-samples`` (torchrun's own parser
    takes ``--n`` for an abbreviation of its options)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


@dataclass(frozen=True)
class CertifyPlan:
    """What ``ddcat certify`` computes, as plain, checked values (each error names its flag).

    ``sigma``: noise std in [0, 1] pixel units; ``n0`` / ``n``: selection / estimation samples per
    image; ``alpha``: family-wise error level per image; ``taus``: the thresholds (0.5 < tau < 1),
    one record each; ``correction``: holm | bonferroni; ``batch_size``: samples per forward pass;
    ``seed``: the noise seed (None: the caller's default); ``max_images``: 0 = all."""

    sigma: float = 0.25
    n0: int = 10
    n: int = 100
    alpha: float = 0.001
    taus: tuple[float, ...] = (0.75,)
    correction: str = "holm"
    batch_size: int = 16
    seed: int | None = None
    max_images: int = 0

    prefix: str = field(default="--", compare=False)  # how errors name a value: --n0 (the CLI) or evaluation.certify.n0
    version: ClassVar[int] = CERTIFY_VERSION

    def name(self, key: str) -> str:
        if self.prefix != "--":
            return f"{self.prefix}{key}"
        if key == "n" and _under_torchrun():
            return "--num-samples"
        return f"--{key.replace('_', '-')}"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise DdcatError(f"{self.name('sigma')} must be a positive finite number (the noise std in [0, 1] pixel units), got {self.sigma}")
        for key in ("n0", "n", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DdcatError(f"{self.name(key)} must be an integer >= 1, got {value}")
        if self.n > 10**7:
            raise DdcatError(f"{self.name('n')} must be at most 10000000, got {self.n}")
        if not (0 < self.alpha < 1):
            raise DdcatError(f"{self.name('alpha')} must lie in (0, 1), got {self.alpha}")
        if not self.taus:
            raise DdcatError(f"certification needs at least one {self.name('tau')}")
        for tau in self.taus:
            if not (0.5 < tau < 1):
                raise DdcatError(f"{self.name('tau')} must lie in (0.5, 1) (the radius sigma * Phi^-1(tau) is positive only above 0.5), got {tau}")
        if self.correction not in CORRECTIONS:
            raise DdcatError(f"{self.name('correction')} must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if self.max_images < 0:
            raise DdcatError(f"{self.name('max_images')} must be >= 0, got {self.max_images}")
        if self.seed is not None and not (0 <= self.seed < 2**63):
            raise DdcatError(f"{self.name('seed')} must lie in [0, 2^63), got {self.seed}")

    def check_samples(self, pixels: int, where: str) -> None:
        """A DdcatError when some tau cannot certify a single pixel of an image of ``pixels``
        tested (labelled) pixels at this n and alpha (said before any sampling), naming the
        smallest n. The more pixels, the larger that n: give the largest family of the dataset."""
        needed = {tau: min_samples(tau, self.alpha, pixels) for tau in self.taus}
        short = {tau: m for tau, m in needed.items() if self.n < m}
        if short:
            tau, m = max(short.items(), key=lambda kv: kv[1])
            raise DdcatError(
                f"{self.name('n')} {self.n} cannot certify any pixel at {self.name('alpha')} {self.alpha:g} and {self.name('tau')} {tau:g} "
                f"over {where} ({pixels} labelled pixels; tau^n must be <= alpha / pixels): use {self.name('n')} {m} or more"
            )


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def sample_seed(seed: int, image: int, phase: int, j: int) -> int:
    """The generator seed of sample ``j`` of ``phase`` (0 selection, 1 estimation) of dataset image
    ``image``: splitmix64 folded over the four counters (a 64-bit value; distinct inputs collide
    with probability ~2^-64)."""
    h = 0
    for v in (seed, image, phase, j):
        h = _splitmix64(h ^ (v & _M64))
    return h


def noise(shape: torch.Size | tuple[int, ...], seeds: list[int], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(len(seeds), *shape) standard normal draws, draw k from a generator seeded with ``seeds[k]``."""
    gen = torch.Generator(device=device)
    out = torch.empty((len(seeds), *shape), device=device, dtype=dtype)
    for k, s in enumerate(seeds):
        gen.manual_seed(s)
        out[k] = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    return out


@torch.no_grad()
def class_counts(
    model: nn.Module, image: torch.Tensor, sigma: float, seeds: list[int], num_classes: int, batch_size: int
) -> torch.Tensor:
    """(K, H, W) int64: how often each pixel's prediction is each class over the samples
    f(image + sigma * noise_k), k over ``seeds``, ``batch_size`` samples per forward pass."""
    counts = torch.zeros((num_classes, *image.shape[-2:]), dtype=torch.int64, device=image.device)
    flat = counts.view(num_classes, -1)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        noisy = image.unsqueeze(0) + sigma * noise(image.shape, chunk, image.device, image.dtype)
        pred = model(noisy).argmax(dim=1).reshape(len(chunk), -1)  # (B, H * W)
        flat.scatter_add_(0, pred, torch.ones_like(pred))  # flat[pred[b, i], i] += 1
    return counts


@dataclass
class ImageCertificate:
    """One image's certification: ``selected`` (H, W) the class c_i of every pixel, ``count``
    (H, W) n_i, ``smoothed`` (H, W) the argmax of the estimation counts, ``labels`` as scored."""

    selected: torch.Tensor
    count: torch.Tensor
    smoothed: torch.Tensor
    labels: torch.Tensor

    def certified(self, table: torch.Tensor, alpha: float, correction: str) -> torch.Tensor:
        """(H, W) the certified prediction, ABSTAIN where H0 is not rejected or the pixel is unlabelled;
        ``table``: :func:`binomial_log_sf_table` of (n, tau)."""
        valid = self.labels != IGNORE_INDEX
        pvalues = table.to(self.count.device)[self.count[valid]].exp()
        out = torch.full_like(self.selected, ABSTAIN)
        out[valid] = torch.where(reject(pvalues, alpha, correction), self.selected[valid], torch.full_like(self.selected[valid], ABSTAIN))
        return out


def certify_image(model: nn.Module, image: torch.Tensor, labels: torch.Tensor, index: int, plan: CertifyPlan, seed: int, num_classes: int) -> ImageCertificate:
    """Steps 1-2 of CERTIFY for dataset image ``index`` (``image`` (3, H, W) in [0, 1])."""
    selection = class_counts(model, image, plan.sigma, [sample_seed(seed, index, 0, j) for j in range(plan.n0)], num_classes, plan.batch_size)
    selected = selection.argmax(dim=0)
    estimation = class_counts(model, image, plan.sigma, [sample_seed(seed, index, 1, j) for j in range(plan.n)], num_classes, plan.batch_size)
    count = estimation.gather(0, selected.unsqueeze(0))[0]
    return ImageCertificate(selected, count, estimation.argmax(dim=0), labels)


def abstain_confusion(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K + 1) int64 counts over labelled pixels: rows ground truth, columns the prediction,
    the last column abstentions (``pred == ABSTAIN``)."""
    valid = labels != IGNORE_INDEX
    gt = labels[valid].long()
    p = pred[valid].long()
    p = torch.where(p == ABSTAIN, torch.full_like(p, num_classes), p)
    k1 = num_classes + 1
    return torch.bincount(gt * k1 + p, minlength=num_classes * k1).reshape(num_classes, k1).cpu()


def certified_metrics(matrix: torch.Tensor) -> dict[str, Any]:
    """From a (K, K + 1) :func:`abstain_confusion`: certified pixel accuracy (correct and not
    abstained, over labelled pixels), abstain rate, and certified mIoU where an abstained pixel is a
    false negative of its true class only: IoU_c = TP / (TP + FP + FN) with FN including the
    abstentions and FP only the pixels predicted c; mean over classes with a non-empty union."""
    m = matrix.to(torch.float64)
    k = m.shape[0]
    tp = m[:, :k].diag()
    gt = m.sum(1)
    pred = m[:, :k].sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    total = m.sum()
    return {
        "certified_pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "abstain_rate": float(m[:, k].sum() / total) if total > 0 else 0.0,
        "certified_mIoU": float(iou[present].mean()) if present.any() else 0.0,
        "certified_per_class_iou": [float(v) if p else None for v, p in zip(iou.tolist(), present.tolist())],
        "num_pixels": int(total),
    }


def _images(dataset, rank: int, world: int, max_images: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    n = len(dataset) if not max_images else min(max_images, len(dataset))
    for index in range(rank, n, world):
        image, label = dataset[index]
        yield index, image, label


def _check_family(model: nn.Module, dataset, plan: CertifyPlan, ctx: DistContext) -> None:
    """Before any sampling: the Holm / Bonferroni family of an image is its labelled pixels
    (label != 255), so n must suffice for the image with the most of them. One pass over the
    labels (each rank its own images, the largest count shared exactly), the same on every rank."""
    world = max(ctx.world, 1)
    mine = torch.zeros(world, 3, dtype=torch.int64)  # row r: rank r's (largest count, H, W)
    for _, image, label in _images(dataset, ctx.rank, world, plan.max_images):
        image, label = evaluation_inputs(model, image.unsqueeze(0), label.unsqueeze(0))
        count = int((label != IGNORE_INDEX).sum())
        if count > int(mine[ctx.rank, 0]):
            mine[ctx.rank] = torch.tensor([count, label.shape[-2], label.shape[-1]])
    all_reduce_sum(mine, ctx)
    count, h, w = (int(v) for v in mine[int(mine[:, 0].argmax())])
    if count == 0:
        raise DdcatError(
            f"the certification's images have no labelled pixel (every label is {IGNORE_INDEX} = ignore): "
            "its numbers would be meaningless; check the data and --max-images"
        )
    plan.check_samples(count, f"the image with the most labelled pixels ({h} x {w})")


def certify_dataset(
    model: nn.Module,
    dataset,
    plan: CertifyPlan,
    num_classes: int,
    seed: int,
    ctx: DistContext | None = None,
    progress: bool = True,
    desc: str = "certify",
) -> list[dict[str, Any]]:
    """CERTIFY on every image of ``dataset`` (``plan.max_images`` at most); one record per tau.

    ``model``: an inference path in eval mode returning (B, K, H, W) logits for [0, 1] images;
    ``seed``: the noise seed when ``plan.seed`` is None. With several processes each rank takes
    every world-th image and the counts are summed exactly. Raises a DdcatError before sampling
    when n is too small for the largest family of tested pixels, the most labelled pixels of any
    image (:meth:`CertifyPlan.check_samples`), or when no image has a labelled pixel."""
    ctx = ctx or DistContext()
    device = ctx.device
    seed = plan.seed if plan.seed is not None else seed
    model.eval()
    total = len(dataset) if not plan.max_images else min(plan.max_images, len(dataset))
    if total == 0:
        raise DdcatError("the certification has no image to certify (empty split or --max-images)")
    _check_family(model, dataset, plan, ctx)
    tables = {tau: binomial_log_sf_table(plan.n, tau) for tau in plan.taus}
    confusions = {tau: torch.zeros(num_classes, num_classes + 1, dtype=torch.int64) for tau in plan.taus}
    smoothed = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)
    # per image: rows 0..T-1 the certified correct pixels per tau, row -2 the smoothed correct ones, row -1 the labelled ones
    per_image = torch.zeros(len(plan.taus) + 2, total, dtype=torch.int64)
    abstained = torch.zeros(len(plan.taus), total, dtype=torch.int64)
    image_miou = torch.zeros(len(plan.taus), total, dtype=torch.float64)  # NaN: an image without labelled pixels
    seen = torch.zeros(total, dtype=torch.int64)
    tic = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=not (progress and ctx.is_main), dynamic_ncols=True, leave=False)
    for index, image, label in _images(dataset, ctx.rank, ctx.world, plan.max_images):
        images, labels = evaluation_inputs(model, image.unsqueeze(0).to(device), label.unsqueeze(0).to(device))
        activity.note(f"certifying image {index} ({desc}: {plan.n0} + {plan.n} noisy samples)", min(plan.batch_size, max(plan.n0, plan.n)),
                      images.shape[-2:], activity.CERTIFY_REMEDY)
        cert = certify_image(model, images[0], labels[0], index, plan, seed, num_classes)
        sm = abstain_confusion(cert.smoothed, cert.labels, num_classes)
        smoothed += sm
        per_image[-2, index] = int(sm.diag().sum())  # smoothed correct
        per_image[-1, index] = int(sm.sum())  # labelled pixels
        seen[index] = 1
        for t, tau in enumerate(plan.taus):
            c = abstain_confusion(cert.certified(tables[tau], plan.alpha, plan.correction), cert.labels, num_classes)
            confusions[tau] += c
            per_image[t, index] = int(c[:, :num_classes].diag().sum())
            abstained[t, index] = int(c[:, num_classes].sum())
            image_miou[t, index] = certified_metrics(c)["certified_mIoU"] if int(c.sum()) else math.nan
        bar.update(ctx.world)
    bar.close()
    seconds = time.perf_counter() - tic
    for tensor in (smoothed, per_image, abstained, image_miou, seen, *confusions.values()):
        all_reduce_sum(tensor, ctx)
    if int(smoothed.sum()) == 0:
        raise DdcatError(
            f"the certification saw {int(seen.sum())} images and no labelled pixel (every label is {IGNORE_INDEX} = ignore): "
            "its numbers would be meaningless; check the data and --max-images"
        )
    smooth = certified_metrics(smoothed)  # no abstentions: its "certified" numbers are the plain ones
    pixels = per_image[-1].clamp(min=1).to(torch.float64)
    records = []
    for t, tau in enumerate(plan.taus):
        metrics = certified_metrics(confusions[tau])
        records.append({
            "tau": tau,
            "sigma": plan.sigma,
            "radius": certified_radius(plan.sigma, tau),
            "n0": plan.n0,
            "n": plan.n,
            "alpha": plan.alpha,
            "correction": plan.correction,
            "seed": seed,
            **metrics,
            "smoothed_pixel_accuracy": smooth["certified_pixel_accuracy"],
            "smoothed_mIoU": smooth["certified_mIoU"],
            "num_images": int(seen.sum()),
            "threat_model": THREAT_MODEL,
            "passes_per_image": plan.n0 + plan.n,
            "seconds": seconds,  # this process's sampling time (rank 0 under torchrun)
            "images": [
                {
                    "index": i,
                    "num_pixels": int(per_image[-1, i]),
                    "certified_pixel_accuracy": float(per_image[t, i] / pixels[i]),
                    "abstain_rate": float(abstained[t, i] / pixels[i]),
                    "certified_mIoU": None if math.isnan(float(image_miou[t, i])) else float(image_miou[t, i]),
                    "smoothed_pixel_accuracy": float(per_image[-2, i] / pixels[i]),
                }
                for i in range(total) if seen[i]
            ],
        })
    return records
