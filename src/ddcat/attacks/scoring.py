"""How good an adversarial image is, per image: the rule every "best iterate" and worst case uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddcat.attacks import losses as L


@dataclass
class Score:
    """Per-image attack quality: ``bad`` = valid pixels the attack has not won yet (untargeted:
    still classified correctly; targeted: not yet the target), lower is better; ``objective`` = the
    tie-breaker, higher is better (untargeted: the per-image CE to the label, :func:`losses.ce`;
    targeted: minus the CE to the target)."""

    bad: torch.Tensor  # (N,) int64
    objective: torch.Tensor  # (N,) float32

    @staticmethod
    def of(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> "Score":
        logits = logits.detach().float()
        n = labels.shape[0]
        hit = L.hits(logits, labels).reshape(n, -1).sum(dim=1)
        ce = L.ce(logits, labels)
        if targeted:
            return Score(L.valid_pixels(labels).reshape(n, -1).sum(dim=1) - hit, -ce)
        return Score(hit, ce)

    def better_than(self, other: "Score") -> torch.Tensor:
        """(N,) bool: strictly better than ``other`` (fewer bad pixels, ties: higher objective)."""
        return (self.bad < other.bad) | ((self.bad == other.bad) & (self.objective > other.objective))

    @staticmethod
    def select(mask: torch.Tensor, a: "Score", b: "Score") -> "Score":
        return Score(torch.where(mask, a.bad, b.bad), torch.where(mask, a.objective, b.objective))

    def __getitem__(self, index) -> "Score":
        return Score(self.bad[index], self.objective[index])


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
