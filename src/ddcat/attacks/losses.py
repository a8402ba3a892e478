"""Per-pixel attack losses for semantic segmentation.

Every loss takes ``(logits, labels, ...)`` with logits ``(N, K, H, W)`` and int64 labels
``(N, H, W)`` in which 255 marks ignored pixels. Logits are cast to float32 first. Ignored pixels
contribute exactly nothing (their per-pixel loss is 0 and so is their gradient).

Reduction: a per-image value is ``sum over the image's pixels of the per-pixel loss / (H * W)``
(the SegPGD normalisation; an all-ignored image gives 0). With ``per_image=True`` the functions
return these ``(N,)`` values; otherwise their sum, a scalar. Summing (not averaging over the batch)
keeps images independent: the gradient with respect to image ``i`` depends on image ``i`` only and
does not change with the batch size.

The losses are written for untargeted attacks (the attack ascends them). A targeted attack passes the
target labels and descends the same loss (:func:`masked_ce_loss` additionally needs
``targeted=True`` to pick the pixels that have not reached their target yet).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddcat.errors import DdcatError

IGNORE_INDEX = 255

__all__ = [
    "IGNORE_INDEX",
    "pixel_ce",
    "ce_loss",
    "segpgd_lambda",
    "segpgd_weights",
    "segpgd_loss",
    "cospgd_weights",
    "cospgd_loss",
    "masked_ce_loss",
    "pixel_js",
    "js_loss",
    "LOSSES",
]


def _reduce(pixel_loss: torch.Tensor, per_image: bool) -> torch.Tensor:
    n = pixel_loss.shape[0]
    hw = pixel_loss.shape[-2] * pixel_loss.shape[-1]
    values = pixel_loss.reshape(n, -1).sum(dim=1) / max(hw, 1)
    return values if per_image else values.sum()


def _valid(labels: torch.Tensor) -> torch.Tensor:
    return labels != IGNORE_INDEX


def _safe_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels with ignored pixels replaced by class 0 (for gather; mask the result afterwards)."""
    return torch.where(_valid(labels), labels, torch.zeros_like(labels))


def pixel_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy ``(N, H, W)`` in float32; 0 at ignored pixels."""
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="none")


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """Cross-entropy over the valid pixels, per image ``sum / (H*W)``, summed over images."""
    return _reduce(pixel_ce(logits, labels), per_image)


def _predictions(logits: torch.Tensor) -> torch.Tensor:
    return logits.detach().argmax(dim=1)


def segpgd_lambda(t: int, T: int) -> float:
    """SegPGD's ``lambda_t = (t - 1) / (2 T)`` for step ``t = 1..T``."""
    if T < 1 or not 1 <= t <= T:
        raise DdcatError(f"SegPGD step t must be in 1..T, got t={t}, T={T}")
    return (t - 1) / (2 * T)


def segpgd_weights(logits: torch.Tensor, labels: torch.Tensor, t: int, T: int) -> torch.Tensor:
    """SegPGD's per-pixel weights ``(N, H, W)``: ``1 - lambda_t`` where the pixel is classified
    correctly, ``lambda_t`` where it is wrong, 0 at ignored pixels (no gradient flows through them)."""
    lam = segpgd_lambda(t, T)
    correct = _predictions(logits) == labels
    w = torch.where(
        correct,
        torch.full(labels.shape, 1.0 - lam, dtype=torch.float32, device=labels.device),
        torch.full(labels.shape, lam, dtype=torch.float32, device=labels.device),
    )
    return w * _valid(labels)


def segpgd_loss(
    logits: torch.Tensor, labels: torch.Tensor, t: int, T: int, per_image: bool = False
) -> torch.Tensor:
    """SegPGD loss at step ``t`` of ``T``: per-pixel CE weighted by :func:`segpgd_weights`."""
    return _reduce(segpgd_weights(logits, labels, t, T) * pixel_ce(logits, labels), per_image)


def cospgd_weights(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CosPGD's per-pixel weights ``(N, H, W)``, detached: the cosine similarity between
    ``softmax(logits)`` and the one-hot label, i.e. ``p_y / ||p||_2``; 0 at ignored pixels."""
    with torch.no_grad():
        p = torch.softmax(logits.detach().float(), dim=1)
        p_y = p.gather(1, _safe_labels(labels).long().unsqueeze(1)).squeeze(1)
        cos = p_y / p.norm(dim=1).clamp_min(1e-12)
        return cos * _valid(labels)


def cospgd_loss(logits: torch.Tensor, labels: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """CosPGD loss: per-pixel CE weighted by the detached :func:`cospgd_weights`."""
    return _reduce(cospgd_weights(logits, labels) * pixel_ce(logits, labels), per_image)


def masked_ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False, per_image: bool = False
) -> torch.Tensor:
    """Cross-entropy only on the pixels still classified correctly (``targeted=True``: only on the
    pixels whose prediction is not yet the target label)."""
    hit = _predictions(logits) == labels
    mask = ~hit if targeted else hit
    return _reduce(pixel_ce(logits, labels) * (mask & _valid(labels)), per_image)


def pixel_js(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel Jensen-Shannon divergence ``(N, H, W)`` (natural log) between ``softmax(logits)``
    and the one-hot label; 0 at ignored pixels.

    With ``p = p_y`` the closed form is ``log 2 + (p log p - (1 + p) log(1 + p)) / 2``, in
    ``[0, log 2]``; its gradient fades on pixels that are already fooled (``p -> 0``).
    """
    logp = torch.log_softmax(logits.float(), dim=1)
    logp_y = logp.gather(1, _safe_labels(labels).long().unsqueeze(1)).squeeze(1)
    p_y = logp_y.exp()
    js = math.log(2.0) + 0.5 * (p_y * logp_y - (1.0 + p_y) * torch.log1p(p_y))
    return js * _valid(labels)


def js_loss(logits: torch.Tensor, labels: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """Jensen-Shannon divergence between softmax and one-hot label, see :func:`pixel_js`."""
    return _reduce(pixel_js(logits, labels), per_image)


#: Losses selectable by name in :class:`ddcat.attacks.PGD` (``segpgd`` needs ``t`` and ``T``).
LOSSES = ("ce", "masked_ce", "js", "segpgd", "cospgd")
