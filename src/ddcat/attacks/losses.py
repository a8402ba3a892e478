"""The attack losses for semantic segmentation: one table, every loss picked by name.

Every entry of :data:`LOSSES` is a plain function with one signature::

    loss(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> (N,) float32

``logits`` ``(N, K, H, W)`` (cast to float32 first), ``labels`` ``(N, H, W)`` int64 with 255 =
ignore. ``step`` / ``total`` are the attack's step ``t = 1..T`` and ``T`` (only ``segpgd`` uses
them), ``class_counts`` the per-class pixel counts (only ``balanced-masked-ce``). An attack ascends
``loss(...).sum()`` (targeted attacks descend it); summing the per-image values keeps the images
independent: the gradient with respect to image ``i`` depends on image ``i`` only.

Per-image reduction: the MEAN over the image's valid pixels (SEA's convention, Croce et al. 2024);
0 for an image without valid pixels. SegPGD and the ``cospgd`` package divide the sum by ``H * W``
instead; the two differ by a positive per-image constant, which changes neither a sign-gradient
step nor any per-image comparison (APGD's step-size control, the best iterate), so every attack
gives the same iterates under either convention. Ignored pixels contribute exactly nothing (their
per-pixel loss and gradient are 0).

The losses (per pixel, ``u`` = logits, ``p = softmax(u)``, ``y`` = label, ``hit = 1[argmax u = y]``
detached):

===================  ============================================================================
``ce``               ``-log p_y``
``masked-ce``        ``-log p_y * hit`` (targeted: ``* (1 - hit)``, the pixels not yet at the target)
``balanced-masked-   ``masked-ce / N_y``, ``N_y`` the pixel count of class ``y`` in ``class_counts``
ce``                 (counts < 1 count as 1); without ``class_counts``: the image's own label counts
``js``               Jensen-Shannon divergence between ``p`` and one-hot(y), natural log
``masked-spherical`` ``-(u_y / ||u||_2) * hit``
``segpgd``           ``-log p_y`` weighted ``1 - lambda_t`` if hit else ``lambda_t``,
                     ``lambda_t = (t - 1) / (2 T)`` (Gu et al., 2022)
``cospgd``           ``-log p_y`` weighted by the detached ``cos(p, one-hot(y)) = p_y / ||p||_2``
                     (Agnihotri & Keuper, 2023)
``cosine``           ``1 - u_y / ||u||_2`` on the raw logits (PAdam-Cos, Halmosi et al. 2024)
``tsallis``          Tsallis cross-entropy ``L_q = (1 - p_y^(1-q)) / (1 - q)`` (``-log p_y`` at
                     q = 1; ``p_y`` clamped at 1e-12) with ``q`` swept linearly from -2 at
                     ``step = 1`` to 1 at ``step = total`` (:func:`tsallis_q`; TsallisPGD)
===================  ============================================================================

The Tsallis CE's gradient is ``p_y^(1-q)`` times CE's (``dL_q/dp_y = -p_y^(-q)``), so ``q < 1``
down-weights the pixels that are already fooled (small ``p_y``) and ``q = 1`` is plain CE.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ddcat.constants import IGNORE_INDEX
from ddcat.errors import DdcatError

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "UNTARGETED_ONLY",
    "LossFn",
    "loss_by_name",
    "per_image_mean",
    "pixel_ce",
    "pixel_js",
    "ce",
    "masked_ce",
    "balanced_masked_ce",
    "js",
    "masked_spherical",
    "segpgd",
    "cospgd",
    "segpgd_lambda",
    "segpgd_weights",
    "cospgd_weights",
    "balanced_weights",
    "pixel_tsallis",
    "tsallis_q",
    "tsallis",
    "cosine",
    "TSALLIS_Q_START",
    "TSALLIS_Q_END",
    "TSALLIS_P_MIN",
]

LossFn = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------- per-pixel pieces


def valid_pixels(labels: torch.Tensor) -> torch.Tensor:
    return labels != IGNORE_INDEX


def _safe_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels with ignored pixels replaced by class 0 (for gather; mask the result afterwards)."""
    return torch.where(valid_pixels(labels), labels, torch.zeros_like(labels))


def hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` bool, detached: valid pixels whose prediction (argmax) equals the label.

    ``max(dim=1).indices`` is the argmax (the first maximum on ties) and several times faster than
    ``argmax(dim=1)`` over the strided class dimension on the CPU."""
    return (logits.detach().max(dim=1).indices == labels) & valid_pixels(labels)


def per_image_mean(pixel_loss: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the sum of ``pixel_loss`` over each image's valid pixels / their number (0 if none).

    ``pixel_loss`` must already be 0 at ignored pixels."""
    n = labels.shape[0]
    count = valid_pixels(labels).reshape(n, -1).sum(dim=1).clamp_min(1)
    return pixel_loss.reshape(n, -1).sum(dim=1) / count


def pixel_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy ``(N, H, W)`` in float32; 0 at ignored pixels."""
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="none")


def pixel_js(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel Jensen-Shannon divergence ``(N, H, W)`` (natural log) between ``softmax(logits)``
    and the one-hot label; 0 at ignored pixels.

    With ``p = p_y`` the closed form is ``log 2 + (p log p - (1 + p) log(1 + p)) / 2``, in
    ``[0, log 2]``; its gradient fades on pixels that are already fooled (``p -> 0``).
    """
    logp = torch.log_softmax(logits.float(), dim=1)
    logp_y = logp.gather(1, _safe_labels(labels).unsqueeze(1)).squeeze(1)
    p_y = logp_y.exp()
    value = math.log(2.0) + 0.5 * (p_y * logp_y - (1.0 + p_y) * torch.log1p(p_y))
    return value * valid_pixels(labels)


def segpgd_lambda(t: int, T: int) -> float:
    """SegPGD's ``lambda_t = (t - 1) / (2 T)`` for step ``t = 1..T``."""
    if T < 1 or not 1 <= t <= T:
        raise DdcatError(f"SegPGD step t must be in 1..T, got t={t}, T={T}")
    return (t - 1) / (2 * T)


def segpgd_weights(logits: torch.Tensor, labels: torch.Tensor, t: int, T: int) -> torch.Tensor:
    """SegPGD's per-pixel weights ``(N, H, W)``: ``1 - lambda_t`` where the pixel is classified
    correctly, ``lambda_t`` where it is wrong, 0 at ignored pixels."""
    lam = segpgd_lambda(t, T)
    correct = hits(logits, labels)
    w = torch.where(correct, 1.0 - lam, lam).float()
    return w * valid_pixels(labels)


def cospgd_weights(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CosPGD's per-pixel weights ``(N, H, W)``, detached: the cosine similarity between
    ``softmax(logits)`` and the one-hot label, i.e. ``p_y / ||p||_2``; 0 at ignored pixels."""
    with torch.no_grad():
        p = torch.softmax(logits.detach().float(), dim=1)
        p_y = p.gather(1, _safe_labels(labels).unsqueeze(1)).squeeze(1)
        return p_y / p.norm(dim=1).clamp_min(1e-12) * valid_pixels(labels)


def balanced_weights(labels: torch.Tensor, class_counts: Sequence[float] | torch.Tensor | None) -> torch.Tensor:
    """Per-pixel weights ``1 / N_y`` ``(N, H, W)``, 0 at ignored pixels.

    ``N_y`` = ``class_counts[y]`` (e.g. the training split's pixel counts; counts below 1 count as
    1), or, when ``class_counts`` is None, the count of class ``y`` in the pixel's own image (so the
    images of a batch stay independent)."""
    safe = _safe_labels(labels)
    valid = valid_pixels(labels)
    if class_counts is not None:
        counts = torch.as_tensor(class_counts, dtype=torch.float32, device=labels.device)
        if safe.numel() and int(safe.max()) >= counts.numel():
            raise DdcatError(f"class_counts has {counts.numel()} classes but the labels go up to {int(safe.max())}")
        n_y = counts.clamp_min(1.0)[safe]
    else:
        n = labels.shape[0]
        k = int(safe.max()) + 1 if safe.numel() else 1
        index = safe + k * torch.arange(n, device=labels.device).view(n, 1, 1)  # (image, class)
        n_y = torch.bincount(index[valid], minlength=n * k).float()[index].clamp_min(1.0)
    return valid / n_y


# ----------------------------------------------------------------------------- the table


def ce(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """Cross-entropy, mean over each image's valid pixels."""
    return per_image_mean(pixel_ce(logits, labels), labels)


def masked_ce(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """CE on the pixels still classified correctly (targeted: on those not yet at the target)."""
    hit = hits(logits, labels)
    mask = (~hit & valid_pixels(labels)) if targeted else hit
    return per_image_mean(pixel_ce(logits, labels) * mask, labels)


def balanced_masked_ce(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """Masked CE weighted by ``1 / N_y`` (:func:`balanced_weights`). Untargeted."""
    w = balanced_weights(labels, class_counts) * hits(logits, labels)
    return per_image_mean(pixel_ce(logits, labels) * w, labels)


def js(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """Jensen-Shannon divergence to the one-hot label (:func:`pixel_js`)."""
    return per_image_mean(pixel_js(logits, labels), labels)


def masked_spherical(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """``-(u_y / ||u||_2)`` on the pixels still classified correctly (mask detached). Untargeted."""
    u = logits.float()
    u_y = u.gather(1, _safe_labels(labels).unsqueeze(1)).squeeze(1)
    value = -u_y / u.norm(dim=1).clamp_min(1e-12)
    return per_image_mean(value * hits(logits, labels), labels)


def segpgd(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """SegPGD's loss at step ``step`` of ``total``: CE weighted by :func:`segpgd_weights`."""
    return per_image_mean(segpgd_weights(logits, labels, step, total) * pixel_ce(logits, labels), labels)


def cospgd(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """CosPGD's loss: CE weighted by the detached :func:`cospgd_weights`."""
    return per_image_mean(cospgd_weights(logits, labels) * pixel_ce(logits, labels), labels)


TSALLIS_Q_START = -2.0  # TsallisPGD's linear schedule: q from -2 ...
TSALLIS_Q_END = 1.0  # ... to 1 (plain CE) over an attack's (or APGD stage's) iterations
TSALLIS_P_MIN = 1e-12  # p_y is clamped here (no gradient below), as in TsallisPGD's code


def tsallis_q(step: int, total: int) -> float:
    """The Tsallis q at step ``t = 1..T``: ``-2 + 3 (t - 1) / (T - 1)`` (-2 at the first step, 1 at
    the last; -2 when ``T = 1``). TsallisPGD's code uses ``-2 + 3 i / T`` at iteration
    ``i = 0..T-1`` (its last q is ``1 - 3 / T``); ddcat reaches q = 1 at the last step."""
    if total < 1 or not 1 <= step <= total:
        raise DdcatError(f"Tsallis step t must be in 1..T, got t={step}, T={total}")
    if total == 1:
        return TSALLIS_Q_START
    return TSALLIS_Q_START + (TSALLIS_Q_END - TSALLIS_Q_START) * (step - 1) / (total - 1)


def pixel_tsallis(logits: torch.Tensor, labels: torch.Tensor, q: float) -> torch.Tensor:
    """Per-pixel Tsallis cross-entropy ``(N, H, W)``: ``(1 - p^(1-q)) / (1 - q)``, ``-log p`` at
    ``q = 1``, ``p = softmax(logits)_y`` clamped at ``TSALLIS_P_MIN``; 0 at ignored pixels.

    Computed as ``-expm1((1 - q) log p) / (1 - q)`` (accurate near q = 1)."""
    logp = torch.log_softmax(logits.float(), dim=1).gather(1, _safe_labels(labels).unsqueeze(1)).squeeze(1)
    logp = logp.clamp_min(math.log(TSALLIS_P_MIN))
    q = float(q)
    value = -logp if q == 1.0 else -torch.expm1((1.0 - q) * logp) / (1.0 - q)
    return value * valid_pixels(labels)


def tsallis(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """Tsallis CE at ``q = tsallis_q(step, total)``, mean over each image's valid pixels. Untargeted."""
    return per_image_mean(pixel_tsallis(logits, labels, tsallis_q(step, total)), labels)


def cosine(logits, labels, *, step=1, total=1, class_counts=None, targeted=False) -> torch.Tensor:
    """``1 - u_y / ||u||_2`` on the raw logits (no mask), mean over each image's valid pixels.
    Untargeted."""
    u = logits.float()
    u_y = u.gather(1, _safe_labels(labels).unsqueeze(1)).squeeze(1)
    value = 1.0 - u_y / u.norm(dim=1).clamp_min(1e-12)
    return per_image_mean(value * valid_pixels(labels), labels)


#: Every attack loss by name (see the module docstring).
LOSSES: dict[str, LossFn] = {
    "ce": ce,
    "masked-ce": masked_ce,
    "balanced-masked-ce": balanced_masked_ce,
    "js": js,
    "masked-spherical": masked_spherical,
    "segpgd": segpgd,
    "cospgd": cospgd,
    "cosine": cosine,
    "tsallis": tsallis,
}
#: Losses defined for untargeted attacks only.
UNTARGETED_ONLY = ("balanced-masked-ce", "masked-spherical", "segpgd", "cospgd", "cosine", "tsallis")


def loss_name(name: object, targeted: bool = False) -> str:
    """The canonical table name of ``name`` (``_`` and ``-`` are the same, any case)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in LOSSES:
        raise DdcatError(f"unknown attack loss {name!r}; valid losses: {', '.join(LOSSES)}")
    if targeted and key in UNTARGETED_ONLY:
        raise DdcatError(f"loss {key!r} supports untargeted attacks only (targeted=True given)")
    return key


def loss_by_name(name: str) -> LossFn:
    return LOSSES[loss_name(name)]
