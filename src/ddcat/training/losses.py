"""The math of SAT and DDC-AT as small pure functions (paper eqs. 3-6, Alg. 2).

Shapes: logits (N, C, H, W); labels, routing maps and mask labels (N, H, W).
``E`` in eqs. 3-5 is a mean over pixels; ddcat takes it over the *valid* pixels (label != 255)
of the batch, so that with every pixel routed to the main branch (p = 0) L_n + L_a equals the
plain cross-entropy, and each valid pixel is counted once, in exactly one branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddcat.constants import IGNORE_INDEX



def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean CE over pixels whose label is not ``ignore_index`` (0 when there are none): eq. 3 with
    every pixel weighted 1."""
    return routed_cross_entropy(logits, labels, labels.new_ones(()), ignore_index)


def routing(mask_logits: torch.Tensor) -> torch.Tensor:
    """p = argmax of the mask head: 1 sends the pixel to the auxiliary branch f_a (int64, N x H x W)."""
    return mask_logits.argmax(dim=1)


def combine(main_logits: torch.Tensor, aux_logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """o = o_a * p + o_n * (1 - p), p broadcast over the class dimension."""
    p = p.unsqueeze(1).to(main_logits.dtype)
    return aux_logits * p + main_logits * (1 - p)


def boundary_property(b_clean: torch.Tensor, b_adv: torch.Tensor) -> torch.Tensor:
    """1[B_clean != B_adv]: the pixel's combined prediction changes under the attack (int64)."""
    return (b_clean != b_adv).long()


#: The divisions of DDC-AT: the paper's and its two ablations (Sec. 6.4).
DIVISIONS = ("ddcat", "ddcat-m", "ddcat-n")


def mask_labels(division: str, b_clean: torch.Tensor, b_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask labels (M_clean, M_adv) for images whose clean/adversarial label maps are given.

    - ``ddcat`` (Alg. 2): clean pixels with the boundary property go to f_a; every adversarial
      pixel goes to f_n: M_clean = 1[B_clean != B_adv], M_adv = 0.
    - ``ddcat-m``: clean *and* adversarial pixels with the boundary property go to f_a:
      M_clean = M_adv = 1[B_clean != B_adv].
    - ``ddcat-n``: only adversarial pixels with the boundary property go to f_a:
      M_clean = 0, M_adv = 1[B_clean != B_adv].
    """
    boundary = boundary_property(b_clean, b_adv)
    zero = torch.zeros_like(boundary)
    if division == "ddcat":
        return boundary, zero
    if division == "ddcat-m":
        return boundary, boundary.clone()
    if division == "ddcat-n":
        return zero, boundary
    raise ValueError(f"unknown division {division!r}")


def routed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Eqs. 3 / 4: E(CE(logits, y) * weight) with weight = q (main) or p (auxiliary).

    The mean runs over all valid pixels of the batch, whatever their weight.
    """
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")
    valid = (labels != ignore_index).sum()
    return (per_pixel * weight.to(per_pixel.dtype)).sum() / valid.clamp(min=1)


def mask_loss(
    mask_logits: torch.Tensor, mask_target: torch.Tensor, labels: torch.Tensor, ignore_void: bool = True, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Eq. 5: CE of the mask head against the mask labels M.

    With ``ignore_void`` (ddcat's default) pixels whose segmentation label is ``ignore_index``
    do not count; the paper's code counts them (``ignore_void=False``).
    """
    target = mask_target.long()
    if ignore_void:
        target = torch.where(labels == ignore_index, torch.full_like(target, ignore_index), target)
    return cross_entropy(mask_logits, target, ignore_index)
