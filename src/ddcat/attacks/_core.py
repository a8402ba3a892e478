"""Shared machinery of the attacks: argument checks, eval mode, the attack forward and scoring."""

from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ddcat.attacks.losses import IGNORE_INDEX
from ddcat.errors import DdcatError

PRECISIONS = ("fp32", "autocast")


# ----------------------------------------------------------------------------- hyper-parameters


def check_eps(eps: object) -> float:
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


def check_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise DdcatError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(precision)


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


# ----------------------------------------------------------------------------- model state


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every module in eval mode; restore each module's own previous mode, also on exceptions."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _autocast_off(x: torch.Tensor, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


class Forward:
    """Calls the model for one attack on one batch; checks the output shape on every call and the
    label values once (after the first call, when the number of classes is known)."""

    def __init__(self, model: torch.nn.Module, labels: torch.Tensor, precision: str) -> None:
        self.model = model
        self.labels = labels
        self.precision = precision
        self.checked = False

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast_off(x, self.precision):
            out = check_logits(self.model(x), x)
        if not self.checked:
            check_label_values(self.labels, out.shape[1])
            self.checked = True
        return out

    def loss_and_grad(
        self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward and one input-gradient backward at ``x``: returns (detached logits, grad).

        The loss is computed in float32. Only the input gradient is taken (``autograd.grad``), so
        parameters' ``.grad`` stay untouched and no weight gradients are computed."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.logits(x)
            loss = loss_fn(logits.float())
            (grad,) = torch.autograd.grad(loss, x)
        return logits.detach(), grad

    def score(self, x: torch.Tensor, targeted: bool) -> "Score":
        with torch.no_grad():
            return Score.of(self.logits(x), self.labels, targeted)


# ----------------------------------------------------------------------------- scoring


@dataclass
class Score:
    """Per-image attack quality: ``bad`` = valid pixels the attack has not won yet (untargeted:
    still classified correctly; targeted: not yet the target), lower is better; ``objective`` = the
    tie-breaker, higher is better (untargeted: CE to the label, targeted: minus CE to the target)."""

    bad: torch.Tensor  # (N,) int64
    objective: torch.Tensor  # (N,) float32

    @staticmethod
    def of(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> "Score":
        logits = logits.detach().float()
        valid = labels != IGNORE_INDEX
        hit = (logits.argmax(dim=1) == labels) & valid
        n = labels.shape[0]
        hw = max(labels.shape[-1] * labels.shape[-2], 1)
        ce = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
        ce = ce.reshape(n, -1).sum(dim=1) / hw
        if targeted:
            bad = valid.reshape(n, -1).sum(dim=1) - hit.reshape(n, -1).sum(dim=1)
            return Score(bad, -ce)
        return Score(hit.reshape(n, -1).sum(dim=1), ce)

    def better_than(self, other: "Score") -> torch.Tensor:
        """(N,) bool: strictly better than ``other`` (fewer bad pixels, ties: higher objective)."""
        return (self.bad < other.bad) | ((self.bad == other.bad) & (self.objective > other.objective))

    @staticmethod
    def select(mask: torch.Tensor, a: "Score", b: "Score") -> "Score":
        return Score(torch.where(mask, a.bad, b.bad), torch.where(mask, a.objective, b.objective))


def select_images(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def keep_better(
    best_x: torch.Tensor | None, best: "Score | None", x: torch.Tensor, score: "Score"
) -> tuple[torch.Tensor, "Score"]:
    """Per image, the better of the kept (``best_x``, ``best``) and the new (``x``, ``score``);
    the kept one on exact ties. With nothing kept yet, the new one."""
    if best_x is None or best is None:
        return x, score
    better = score.better_than(best)
    return select_images(better, x, best_x), Score.select(better, score, best)
