"""Segmentation metrics from one confusion matrix accumulated over a whole dataset.

Rows are ground truth, columns predictions; pixels labelled ``ignore_index`` are skipped.
IoU_c = TP / (TP + FP + FN). Two mIoU conventions are reported:

- ``mIoU``: mean over classes whose union is non-empty (the common modern convention);
- ``mIoU_all``: mean over all K classes, an absent class counting 0 (the paper's code).

and two mAcc (mean per-class recall) conventions:

- ``mAcc``: mean over classes present in the ground truth;
- ``mAcc_all``: mean over all K classes, a class absent from the ground truth counting 0 (the
  paper's code: ``mean(intersection / (target + 1e-10))``).
"""

from __future__ import annotations

import torch

from ddcat.constants import IGNORE_INDEX


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


def metrics_from_confusion(matrix: torch.Tensor) -> dict[str, object]:
    m = matrix.to(torch.float64)
    tp = m.diag()
    gt = m.sum(1)
    pred = m.sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    has_gt = gt > 0
    recall = torch.where(has_gt, tp / gt.clamp(min=1), torch.zeros_like(tp))
    total = m.sum()
    return {
        "mIoU": float(iou[present].mean()) if present.any() else 0.0,
        "mIoU_all": float(iou.mean()),
        "mAcc": float(recall[has_gt].mean()) if has_gt.any() else 0.0,
        "mAcc_all": float(recall.mean()),
        "aAcc": float(tp.sum() / total) if total > 0 else 0.0,
        "per_class_iou": [float(v) if p else None for v, p in zip(iou.tolist(), present.tolist())],
        "num_pixels": int(total),
    }
