"""``fgsm-rs``: SAT whose training attack is FGSM with a random start (Wong, Rice & Kolter, ICLR
2020; the attack is :class:`ddcat.attacks.fgsm_rs.RandomStartFGSM`).

The adversarial share of the batch (the last f m images, as in SAT's Alg. 1) gets one FGSM step of
alpha = ``attack.fgsm_rs_step`` x eps from a uniform random start. Cost: one forward and one
input-gradient backward on the adversarial images, plus SAT's training forward / backward: about
1.5x clean training at f = 0.5 where SAT with BIM-3 costs about 2x.

The same attack is the inner attack of DDC-AT when ``attack.name: fgsm-rs``: its division needs
B_adv, the combined prediction on the adversarial version of each clean image, which is then the
prediction on x_1; the mask labels stay M = 1[B_clean != B_adv] on the clean rows and 0 on the
adversarial rows (Alg. 2), only B_adv comes from one random-start step instead of BIM-3. Because the
attack starts at a random point, B_clean costs one separate no-grad forward of the clean half.
"""

from __future__ import annotations

from ddcat.attacks.fgsm_rs import RandomStartFGSM
from ddcat.training.sat import StandardAdversarialTraining

__all__ = ["FastAdversarialTraining", "RandomStartFGSM"]


class FastAdversarialTraining(StandardAdversarialTraining):
    """``fgsm-rs``: SAT (Alg. 1's batch split, ``train.adv_fraction``) whose training attack is
    :class:`RandomStartFGSM`. Built by :func:`ddcat.training.loop.build_method` from ``attack.eps``,
    ``attack.fgsm_rs_step`` and ``attack.precision`` (``attack.name`` / ``steps`` / ``alpha`` are
    not read)."""

    name = "fgsm-rs"
