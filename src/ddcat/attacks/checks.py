"""Argument checks of the attacks: hyper-parameters at construction, images/labels/logits per call.

Every check raises :class:`ddcat.errors.DdcatError` with a one-line message naming the value.
"""

from __future__ import annotations

import numbers

import torch

from ddcat.constants import IGNORE_INDEX
from ddcat.errors import DdcatError

#: Label value of ignored pixels (no loss, no gradient, not scored).
PRECISIONS = ("fp32", "autocast")


# ----------------------------------------------------------------------------- hyper-parameters


def check_eps(eps: object) -> float:
    """``eps`` as a float; a finite number >= 0 (not a bool)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise DdcatError(f"eps must be a number >= 0, got {eps!r}")
    value = float(eps)
    if not value >= 0.0 or value == float("inf"):
        raise DdcatError(f"eps must be a finite number >= 0, got {eps}")
    return value


def check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise DdcatError(f"alpha (step size) must be a number > 0, got {alpha!r}")
    value = float(alpha)
    if not value > 0.0 or value == float("inf"):
        raise DdcatError(f"alpha (step size) must be a finite number > 0, got {alpha}")
    return value


def check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DdcatError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise DdcatError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_seed(seed: object) -> int:
    """A seed for ``torch.Generator.manual_seed``: an integer in [0, 2**63)."""
    value = check_count("seed", seed, 0)
    if value >= 2**63:
        raise DdcatError(f"seed must be < 2**63, got {value}")
    return value


def check_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise DdcatError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(precision)


def check_class_counts(counts: object) -> tuple[float, ...] | None:
    """Per-class pixel counts (a sequence or 1-D tensor of numbers >= 0) as a hashable tuple."""
    if counts is None:
        return None
    if isinstance(counts, torch.Tensor):
        if counts.dim() != 1:
            raise DdcatError(f"class_counts must be one count per class (1-D), got shape {tuple(counts.shape)}")
        counts = counts.tolist()
    try:
        values = tuple(float(c) for c in counts)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DdcatError(f"class_counts must be a sequence of numbers, got {counts!r}") from None
    if not values or any(not (c >= 0.0) or c == float("inf") for c in values):
        raise DdcatError(f"class_counts must be finite numbers >= 0, one per class, got {values}")
    return values


# ----------------------------------------------------------------------------- inputs


def check_inputs(images: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate images ``(N, C, H, W)`` in [0, 1] and labels ``(N, H, W)``; return detached copies
    (labels as int64). Label *values* are checked once the number of classes is known."""
    if not isinstance(images, torch.Tensor):
        raise DdcatError(f"images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if not isinstance(labels, torch.Tensor):
        raise DdcatError(f"labels must be a torch.Tensor (N, H, W), got {type(labels).__name__}")
    if images.dim() != 4:
        raise DdcatError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise DdcatError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise DdcatError(f"labels must be an integer tensor (int64), got dtype {labels.dtype}")
    n, _, h, w = images.shape
    if tuple(labels.shape) != (n, h, w):
        raise DdcatError(
            f"labels shape {tuple(labels.shape)} does not match the logits/images shape "
            f"(N, K, H, W) = ({n}, K, {h}, {w}) (images {tuple(images.shape)}): expected ({n}, {h}, {w})"
        )
    if labels.device != images.device:
        raise DdcatError(f"labels are on {labels.device} but images on {images.device}")
    images = images.detach()
    if images.numel():
        lo, hi = images.min().item(), images.max().item()
        if not (lo >= 0.0 and hi <= 1.0):
            raise DdcatError(f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return images, labels.detach().long()


def check_logits(logits: object, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise DdcatError(
            f"model output must be a logits tensor (N, K, H, W), got {type(logits).__name__} "
            "(an attacked model must return the main logits only in eval mode)"
        )
    n, _, h, w = x.shape
    if logits.dim() != 4 or logits.shape[0] != n or tuple(logits.shape[2:]) != (h, w):
        raise DdcatError(
            f"model output shape {tuple(logits.shape)} is not (N, K, H, W) = ({n}, K, {h}, {w}) "
            f"for input {tuple(x.shape)}"
        )
    return logits


def check_label_values(labels: torch.Tensor, num_classes: int) -> None:
    valid = ((labels >= 0) & (labels < num_classes)) | (labels == IGNORE_INDEX)
    if not bool(valid.all()):
        bad = labels[~valid]
        raise DdcatError(
            f"label values must be in [0, {num_classes}) or {IGNORE_INDEX} (ignore) for a model with "
            f"{num_classes} classes, got {int(bad.min())}..{int(bad.max())}"
        )
