"""Segmentation metrics from one confusion matrix accumulated over a whole dataset.

Rows are ground truth, columns predictions; pixels labelled ``ignore_index`` are skipped.
IoU_c = TP / (TP + FP + FN). Two mIoU conventions are reported:

- ``mIoU``: mean over classes whose union is non-empty (the common modern convention);
- ``mIoU_all``: mean over all K classes, an absent class counting 0 (the paper's code).

and two mAcc (mean per-class recall) conventions:

- ``mAcc``: mean over classes present in the ground truth;
- ``mAcc_all``: mean over all K classes, a class absent from the ground truth counting 0 (the
  paper's code: ``mean(intersection / (target + 1e-10))``).

Every figure needs only three numbers per class: TP, ground-truth pixels and predicted pixels
(``class counts``, ``(..., 3, K)``: :func:`counts_of_confusions`); the IoU formula is written once
(:func:`class_iou`) and serves the dataset metrics, the per-image ones and the batched mIoU of the
greedy worst case (:func:`greedy_miou_selection`).

Per image (Halmosi et al., ECCV 2024; every record):

- ``mIoU_imagewise``: the mean over images of each image's mIoU, taken over the classes with a
  non-empty union in that image (ground truth or prediction); images without a labelled pixel do
  not count (:func:`imagewise_miou`);
- ``size_recall``: recall of ground-truth objects by size: every connected component of one class
  in an image's labels (8-connectivity, :func:`connected_components`) is binned by its size as a
  fraction of the image's labelled pixels (:data:`SIZE_BINS`: < 1 %, 1-5 %, 5-20 %, > 20 %); per bin
  the fraction of its pixels still classified correctly (:func:`size_bins`, :func:`size_recall`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ddcat.constants import IGNORE_INDEX
from ddcat.errors import DdcatError


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` are integer maps of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        pred = pred.reshape(-1).to("cpu", torch.int64)
        target = target.reshape(-1).to("cpu", torch.int64)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(f"target holds values outside [0, {self.num_classes}) and not {self.ignore_index}")
        k = self.num_classes
        if pred.numel() and (pred.min() < 0 or pred.max() >= k):
            raise ValueError(f"prediction holds values outside [0, {k})")
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix

    def compute(self) -> dict[str, object]:
        return metrics_from_confusion(self.matrix)


def counts_of_confusions(matrices: torch.Tensor) -> torch.Tensor:
    """Class counts ``(..., 3, K)`` int64 of confusion matrices ``(..., K, K)`` (rows ground
    truth): TP (the diagonal), ground-truth pixels (row sums), predicted pixels (column sums)."""
    m = torch.as_tensor(matrices).to(torch.int64)
    return torch.stack([m.diagonal(dim1=-2, dim2=-1), m.sum(-1), m.sum(-2)], dim=-2)


def class_iou(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU_c = TP / (TP + FP + FN) of class counts ``(..., 3, K)``, float64, and whether each
    class's union is non-empty (absent classes have IoU 0 here): the one IoU formula."""
    c = counts.to(torch.float64)
    tp, gt, pred = c[..., 0, :], c[..., 1, :], c[..., 2, :]
    union = gt + pred - tp
    present = union > 0
    return torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp)), present


def miou_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """mIoU ``(...)`` float64 of class counts ``(..., 3, K)``: the mean IoU over the classes with
    a non-empty union (0 when none is), as ``metrics_from_confusion(...)["mIoU"]``, batched."""
    iou, present = class_iou(counts)
    n = present.sum(-1)
    return torch.where(n > 0, iou.sum(-1) / n.clamp(min=1), torch.zeros_like(iou[..., 0]))


def per_image_confusions(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, K, K)`` int64 confusion matrix of each image (rows ground truth, columns prediction;
    ignored pixels skipped), from predictions and labels ``(N, H, W)``."""
    n, k = labels.shape[0], num_classes
    valid = labels != IGNORE_INDEX
    image = torch.arange(n, device=labels.device).view(n, 1, 1).expand_as(labels)
    index = (image * k + labels.clamp(0, k - 1)) * k + pred.clamp(0, k - 1)
    counts = torch.bincount(index[valid].reshape(-1).to(torch.int64), minlength=n * k * k)
    return counts.reshape(n, k, k).cpu()


def per_image_counts(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, 3, K)`` int64 class counts of each image (TP, ground truth, prediction; ignored pixels
    skipped): what every metric of an image needs, K times smaller than its confusion matrix."""
    n, k = labels.shape[0], num_classes
    valid = (labels != IGNORE_INDEX).reshape(n, -1)
    y = labels.reshape(n, -1).clamp(0, k - 1).to(torch.int64)
    p = pred.reshape(n, -1).clamp(0, k - 1).to(torch.int64)
    offset = (torch.arange(n, device=labels.device) * k).view(n, 1)
    tp = torch.bincount((y + offset)[valid & (p == y)], minlength=n * k)
    gt = torch.bincount((y + offset)[valid], minlength=n * k)
    pr = torch.bincount((p + offset)[valid], minlength=n * k)
    return torch.stack([tp, gt, pr]).reshape(3, n, k).transpose(0, 1).contiguous().cpu()


def miou_of_confusions(matrices: torch.Tensor) -> torch.Tensor:
    """mIoU of each confusion matrix ``(..., K, K)`` -> ``(...)`` float64 (:func:`miou_of_counts`)."""
    return miou_of_counts(counts_of_confusions(matrices))


def imagewise_miou(counts: torch.Tensor) -> float | None:
    """Image-wise mIoU of per-image class counts ``(N, 3, K)``: the mean over the images that have
    a labelled pixel of each one's mIoU over the classes with a non-empty union in that image
    (Halmosi et al., 2024; their code averages something else). None without such an image."""
    has_pixels = counts[:, 1, :].sum(-1) > 0
    if not bool(has_pixels.any()):
        return None
    return float(miou_of_counts(counts[has_pixels]).mean())


def greedy_miou_selection(
    counts: torch.Tensor, rounds: int = 10, seed: int = 0, starts: Sequence[torch.Tensor] | None = None
) -> tuple[torch.Tensor, float]:
    """Dataset-level worst case for mIoU over ``A`` attacks (Croce, Singh & Hein, 2024).

    ``counts`` ``(A, N, 3, K)``: the class counts (:func:`per_image_counts`) of image ``n`` under
    attack ``a`` (from confusion matrices ``(A, N, K, K)``: :func:`counts_of_confusions`). Start
    from the lowest dataset mIoU among the single attacks and the per-image selections ``starts``
    (each ``(N,)`` int, an attack index per image, e.g. another greedy search's result over a subset
    of the attacks; ties: the first single attack, then the first start), then in each round visit
    the images in a random order (``torch.Generator`` seeded with ``seed``) and switch an image to
    the attack that lowers the dataset mIoU most, if it lowers it at all; stop after ``rounds``
    rounds or a round that changes nothing. Returns the attack chosen per image ``(N,)`` int64 and
    the resulting mIoU, never higher than any single attack's or any start's (the search is local:
    from the best single attack alone it can stop above a selection that another start reaches)."""
    conf = torch.as_tensor(counts).to(torch.int64).cpu()
    if conf.dim() != 4 or conf.shape[-2] != 3 or conf.shape[0] < 1:
        raise DdcatError(f"greedy_miou_selection takes class counts of shape (A, N, 3, K) with A >= 1, got {tuple(conf.shape)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise DdcatError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    n = conf.shape[1]
    rows = torch.arange(n)
    begin = []
    for i, start in enumerate(starts or ()):
        start = torch.as_tensor(start).cpu()
        bad = start.shape != (n,) or start.is_floating_point() or start.is_complex() or start.dtype == torch.bool
        if bad or (n and (int(start.min()) < 0 or int(start.max()) >= conf.shape[0])):
            raise DdcatError(f"greedy_miou_selection: start {i} must be {n} attack indices in [0, {conf.shape[0]}), "
                             f"got shape {tuple(start.shape)} {start.dtype}")
        begin.append(start.to(torch.int64))
    gen = torch.Generator().manual_seed(seed)
    totals = conf.sum(dim=1)  # (A, 3, K)
    single = miou_of_counts(totals)
    first = int(torch.argmin(single))  # argmin returns the first minimum
    choice = torch.full((n,), first, dtype=torch.int64)
    total = totals[first].clone()
    current = float(single[first])
    for start in begin:  # a start replaces the current one only when strictly lower
        start_total = conf[start, rows].sum(0)
        value = float(miou_of_counts(start_total))
        if value < current:
            choice, total, current = start.clone(), start_total, value
    for _ in range(int(rounds)):
        changed = False
        for i in torch.randperm(n, generator=gen).tolist():
            candidates = total.unsqueeze(0) - conf[choice[i], i].unsqueeze(0) + conf[:, i]  # (A, 3, K)
            values = miou_of_counts(candidates)
            a = int(torch.argmin(values))
            if float(values[a]) < current:
                choice[i] = a
                total = candidates[a]
                current = float(values[a])
                changed = True
        if not changed:
            break
    return choice, current


def metrics_from_confusion(matrix: torch.Tensor) -> dict[str, object]:
    return metrics_from_counts(counts_of_confusions(matrix))


def metrics_from_counts(counts: torch.Tensor) -> dict[str, object]:
    """mIoU, mIoU_all, mAcc, mAcc_all, aAcc, per-class IoU and the pixel count of class counts
    ``(3, K)`` (summed over a dataset)."""
    iou, present = class_iou(counts)
    c = counts.to(torch.float64)
    tp, gt = c[0], c[1]
    has_gt = gt > 0
    recall = torch.where(has_gt, tp / gt.clamp(min=1), torch.zeros_like(tp))
    total = gt.sum()
    return {
        "mIoU": float(miou_of_counts(counts)),
        "mIoU_all": float(iou.mean()),
        "mAcc": float(recall[has_gt].mean()) if has_gt.any() else 0.0,
        "mAcc_all": float(recall.mean()),
        "aAcc": float(tp.sum() / total) if total > 0 else 0.0,
        "per_class_iou": [float(v) if p else None for v, p in zip(iou.tolist(), present.tolist())],
        "num_pixels": int(total),
    }


# ----------------------------------------------------------------------------- objects by size

#: Size bins of ground-truth objects, as fractions of an image's labelled pixels: [lo, hi).
SIZE_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.01), (0.01, 0.05), (0.05, 0.20), (0.20, float("inf")))
SIZE_BIN_NAMES = ("<1%", "1-5%", "5-20%", ">20%")


def connected_components(labels: torch.Tensor) -> torch.Tensor:
    """Connected components of each class in label maps ``(N, H, W)``, 8-connectivity: ``(N, H, W)``
    int64, every pixel the flat index (within its image) of the first pixel of its component in
    row-major order; ignored pixels (``IGNORE_INDEX``) are -1.

    Min-label propagation over each pixel's 3x3 neighbours of the same class, with pointer jumping
    (``l <- l[l]``) after every sweep so that long components converge in few sweeps. Pure torch
    (scipy is not a run-time dependency); the tests compare it with ``scipy.ndimage.label``."""
    if labels.dim() != 3:
        raise DdcatError(f"labels must have shape (N, H, W), got {tuple(labels.shape)}")
    n, h, w = labels.shape
    y = labels.to(torch.int64).cpu()
    valid = y != IGNORE_INDEX
    big = h * w  # larger than every index: "no neighbour"
    own = torch.arange(h * w, dtype=torch.int64).view(1, h, w).expand(n, h, w)
    lab = torch.where(valid, own, torch.full_like(own, big))
    pad_y = torch.nn.functional.pad(y, (1, 1, 1, 1), value=-1)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    same = [
        (pad_y[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == y) & valid for dy, dx in offsets
    ]
    flat_base = (torch.arange(n, dtype=torch.int64) * (h * w + 1)).view(n, 1, 1)
    while True:
        padded = torch.nn.functional.pad(lab, (1, 1, 1, 1), value=big)
        new = lab
        for (dy, dx), ok in zip(offsets, same):
            neighbour = padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            new = torch.where(ok, torch.minimum(new, neighbour), new)
        # pointer jumping: a pixel takes the label of the pixel its label names (same component)
        table = torch.cat([new.reshape(n, -1), torch.full((n, 1), big, dtype=torch.int64)], dim=1).reshape(-1)
        while True:
            jumped = torch.where(valid, table[(flat_base + new).clamp(max=n * (h * w + 1) - 1)], new)
            if torch.equal(jumped, new):
                break
            new = jumped
            table = torch.cat([new.reshape(n, -1), torch.full((n, 1), big, dtype=torch.int64)], dim=1).reshape(-1)
        if torch.equal(new, lab):
            break
        lab = new
    return torch.where(valid, lab, torch.full_like(lab, -1))


def size_bins(labels: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` int64: the :data:`SIZE_BINS` index of the ground-truth component each labelled
    pixel belongs to (its component's pixel count over the image's labelled pixels), -1 where
    ignored."""
    comp = connected_components(labels)
    n = comp.shape[0]
    valid = comp >= 0
    flat = comp.reshape(n, -1)
    hw = flat.shape[1]
    index = (flat + (torch.arange(n) * hw).view(n, 1)).clamp(min=0)
    sizes = torch.bincount(index[valid.reshape(n, -1)], minlength=n * hw).to(torch.float64)
    labelled = valid.reshape(n, -1).sum(1).clamp(min=1).to(torch.float64)
    fraction = sizes[index] / labelled.view(n, 1)
    edges = torch.tensor([hi for _, hi in SIZE_BINS[:-1]], dtype=torch.float64)
    bins = torch.bucketize(fraction, edges, right=True)  # lo <= f < hi
    return torch.where(valid.reshape(n, -1), bins, torch.full_like(bins, -1)).reshape(comp.shape)


def size_bin_counts(bins: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(2, B)`` int64 over a batch: per size bin, the component pixels classified correctly and
    all component pixels (``bins`` from :func:`size_bins`)."""
    b = len(SIZE_BINS)
    valid = bins >= 0
    index = bins[valid].cpu()
    correct = (pred.cpu() == labels.cpu())[valid.cpu()]
    return torch.stack([torch.bincount(index[correct], minlength=b), torch.bincount(index, minlength=b)])


def size_recall(counts: torch.Tensor) -> list[dict[str, object]]:
    """The ``size_recall`` record entry of ``(2, B)`` counts (:func:`size_bin_counts` summed):
    per bin its name, recall (correct / pixels; None for an empty bin) and pixel count."""
    out = []
    for name, correct, total in zip(SIZE_BIN_NAMES, counts[0].tolist(), counts[1].tolist()):
        out.append({"bin": name, "recall": correct / total if total else None, "pixels": int(total)})
    return out
