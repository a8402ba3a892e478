"""The math of SAT and DDC-AT as small pure functions (paper eqs. 3-6, Alg. 2).

Shapes: logits (N, C, H, W); labels, routing maps and mask labels (N, H, W).
``E`` in eqs. 3-5 is a mean over pixels; ddcat takes it over the *valid* pixels (label != 255)
of the batch, so that with every pixel routed to the main branch (p = 0) L_n + L_a equals the
plain cross-entropy, and each valid pixel is counted once, in exactly one branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ddcat.constants import IGNORE_INDEX
from ddcat.errors import DdcatError, show


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


@dataclass(frozen=True)
class Division:
    """One division of DDC-AT: which pixels with the boundary property 1[B_clean != B_adv] its mask
    labels send to f_a (M = 1), among the clean images (``clean``) and among the adversarial images
    (``adversarial``) of the training batch; every other pixel gets M = 0 (goes to f_n).

    - ``ddcat`` (Alg. 2): clean pixels with the boundary property go to f_a; every adversarial
      pixel goes to f_n: M_clean = 1[B_clean != B_adv], M_adv = 0.
    - ``ddcat-m`` (Sec. 6.4): clean *and* adversarial pixels with the boundary property go to f_a:
      M_clean = M_adv = 1[B_clean != B_adv].
    - ``ddcat-n`` (Sec. 6.4): only adversarial pixels with the boundary property go to f_a:
      M_clean = 0, M_adv = 1[B_clean != B_adv].
    """

    name: str
    clean: bool
    adversarial: bool

    def __post_init__(self) -> None:
        if not (self.clean or self.adversarial):
            raise DdcatError(f"division {show(self.name)} sends no pixel to f_a: set clean or adversarial")

    def mask_labels(self, b_clean: torch.Tensor, b_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask labels (M_clean, M_adv) for images whose clean/adversarial label maps are given."""
        boundary = boundary_property(b_clean, b_adv)
        m_clean = boundary if self.clean else torch.zeros_like(boundary)
        m_adv = boundary.clone() if self.adversarial else torch.zeros_like(boundary)
        return m_clean, m_adv

    def attacked_rows(self, n_clean: int, m: int) -> slice:
        """The images of a batch of ``m`` (the first ``n_clean`` stay clean) that need an adversarial
        version: the adversarial part always (it is trained on), the clean part when its mask labels
        read the boundary property."""
        return slice(0 if self.clean else n_clean, m)

    def boundary_rows(self, n_clean: int, m: int) -> slice:
        """The images whose boundary property 1[B_clean != B_adv] the mask labels read (B_adv is
        needed there): the clean rows for ``clean``, the adversarial rows for ``adversarial``."""
        return slice(0 if self.clean else n_clean, m if self.adversarial else n_clean)


#: The divisions of DDC-AT by name (``train.method``): the paper's and its two ablations (Sec. 6.4).
DIVISIONS: dict[str, Division] = {
    d.name: d
    for d in (
        Division("ddcat", clean=True, adversarial=False),
        Division("ddcat-m", clean=True, adversarial=True),
        Division("ddcat-n", clean=False, adversarial=True),
    )
}


def division_of(division: str | Division) -> Division:
    """The :class:`Division` a name (``ddcat``, ``ddcat-m``, ``ddcat-n``) stands for; a
    :class:`Division` is returned as it is."""
    if isinstance(division, Division):
        return division
    if isinstance(division, str) and division in DIVISIONS:
        return DIVISIONS[division]
    raise DdcatError(f"unknown DDC-AT division {show(division)}; valid: {', '.join(DIVISIONS)}")


def mask_labels(division: str | Division, b_clean: torch.Tensor, b_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask labels (M_clean, M_adv) of ``division`` (a name or a :class:`Division`): see
    :meth:`Division.mask_labels`, which the training method calls."""
    return division_of(division).mask_labels(b_clean, b_adv)


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
