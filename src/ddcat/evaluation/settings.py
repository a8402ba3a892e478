"""Which attacks an evaluation runs: one :class:`~ddcat.evaluation.engine.Setting` per
(attack, iterations, eps, source model), built from attack names.

- the paper's white-box sweep: ``bim`` at steps 1..7 (eps 0.03, alpha 0.01), Tables 1 / 5;
- black-box transfer: the same settings with the perturbation computed on substitute models;
- the stronger attacks (pgd, segpgd, cospgd, masked-ce, js), the per-image worst case over them
  (``worst``), APGD (``apgd``) and the SEA ensemble (``sea``: APGD with masked CE, balanced
  masked CE and JS, reported per member, per-image worst case for aAcc, greedy worst case for mIoU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from ddcat.attacks import build_attack
from ddcat.config import DEFAULTS
from ddcat.errors import DdcatError
from ddcat.evaluation.engine import Setting

#: Attacks that take a step count from the sweep (``--steps``).
STEP_ATTACKS = ("fgsm", "bim", "pgd", "segpgd", "cospgd", "masked-ce", "js", "worst")
#: Attacks that take an iteration budget (``--iters``): APGD's step-size schedule depends on it.
BUDGET_ATTACKS = ("apgd", "sea")
EVAL_ATTACKS = STEP_ATTACKS + BUDGET_ATTACKS
#: Attacks with a random start: ``restarts`` and ``seed`` apply to them.
RANDOMIZED = ("pgd", "segpgd", "cospgd", "masked-ce", "js", "worst", "apgd", "sea")
DEFAULT_ITERS = 300  # SEA's budget per member (Croce, Singh & Hein 2024)


@dataclass(frozen=True)
class AttackPlan:
    """The attacks to evaluate a model under, as plain values (no argparse, no config).

    ``steps`` are the step counts of the sweep attacks (``STEP_ATTACKS``; 0 is skipped), ``iters``
    the budget of APGD and of each SEA member; one setting per (attack, steps or iters, eps).
    ``restarts`` and ``seed`` reach the randomized attacks (``seed=None``: the caller's default,
    e.g. the run's seed). ``class_counts``: pixels per class of the training split, for SEA's
    balanced masked CE (``None``: the caller computes them from the dataset)."""

    attacks: tuple[str, ...] = ()
    steps: tuple[int, ...] = ()
    eps: tuple[float, ...] = (DEFAULTS["attack"]["eps"],)
    alpha: float = DEFAULTS["attack"]["alpha"]
    iters: int = DEFAULT_ITERS
    restarts: int = 1
    seed: int | None = None
    class_counts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in self.attacks:
            if name not in EVAL_ATTACKS:
                raise DdcatError(f"unknown --attack '{name}'; valid: {', '.join(EVAL_ATTACKS)}")
        if not self.eps:
            raise DdcatError("an evaluation needs at least one eps")
        if self.iters < 1:
            raise DdcatError(f"--iters must be at least 1, got {self.iters}")
        if self.restarts < 1:
            raise DdcatError(f"--restarts must be at least 1, got {self.restarts}")

    @property
    def needs_class_counts(self) -> bool:
        return "sea" in self.attacks

    @property
    def needs_budget(self) -> bool:
        """Whether ``iters`` matters (an attack of ``BUDGET_ATTACKS`` is planned)."""
        return any(a in BUDGET_ATTACKS for a in self.attacks)


def attack_settings(plan: AttackPlan, sources: Sequence[tuple[str, nn.Module | None]], seed: int = 0) -> list[Setting]:
    """Clean plus one setting per (attack, steps or iters, eps, source), in that nesting order.

    ``sources``: (name, model) pairs; ``("self", None)`` is the white-box setting. ``seed`` is used
    where ``plan.seed`` is None."""
    seed = plan.seed if plan.seed is not None else seed
    settings = [Setting()]
    for name in plan.attacks:
        counts = [plan.iters] if name in BUDGET_ATTACKS else [n for n in plan.steps if n != 0]
        for n in counts:
            for eps in plan.eps:
                options: dict = {"seed": seed}
                if name in RANDOMIZED:
                    options["restarts"] = plan.restarts
                if name == "sea" and plan.class_counts is not None:
                    options["class_counts"] = plan.class_counts
                attack = build_attack(name, eps=eps, alpha=plan.alpha, steps=n, **options)
                for source, model in sources:
                    settings.append(Setting(name, attack, n, eps, source, model, alpha=None if name in BUDGET_ATTACKS else plan.alpha))
    return settings
