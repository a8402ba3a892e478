"""Which attacks an evaluation runs: one :class:`~ddcat.evaluation.engine.Setting` per
(attack, iterations, eps, source model), built from attack names.

- the paper's white-box sweep: ``bim`` at steps 1..7 (eps 0.03, alpha 0.01), Tables 1 / 5;
- black-box transfer: the same settings with the perturbation computed on substitute models;
- the stronger attacks (pgd, segpgd, cospgd, masked-ce, js), the per-image worst case over them
  (``worst``), APGD (``apgd``, ``apgd-LOSS``), the SEA ensemble (``sea``: APGD with masked CE,
  balanced masked CE and JS) and the full ensemble (``ensemble``); every ensemble is reported per
  member, per-image worst case for aAcc, greedy worst case for mIoU.

Which attack takes ``--steps`` and which ``--iters``, and which is randomized, is the registry's
(:mod:`ddcat.attacks.registry`): nothing here lists attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from ddcat.attacks import NORMS, build_attack, registry
from ddcat.attacks.min_norm import BOXES
from ddcat.attacks.norms import check_norm
from ddcat.config import DEFAULTS
from ddcat.constants import ITERS
from ddcat.errors import DdcatError
from ddcat.evaluation.engine import Setting

#: Attacks that take a step count from the sweep (``--steps``): the registry's "steps" budget kind.
STEP_ATTACKS = registry.names(budget="steps")
#: Attacks that take an iteration budget (``--iters``): APGD's step-size schedule depends on it.
BUDGET_ATTACKS = registry.names(budget="iters")
EVAL_ATTACKS = registry.ATTACK_NAMES
#: Attacks with a random start: ``restarts`` and ``seed`` apply to them.
RANDOMIZED = registry.names(randomized=True)
DEFAULT_ITERS = ITERS  # kept for callers; the one definition is ddcat.constants.ITERS


@dataclass(frozen=True)
class AttackPlan:
    """The attacks to evaluate a model under, as plain values (no argparse, no config).

    ``steps`` are the step counts of the sweep attacks (``STEP_ATTACKS``; 0 is skipped), ``iters``
    the iteration budget of every attack of ``BUDGET_ATTACKS`` (of each member of SEA and of the
    ensemble); ``iters=None``: each keeps its own default (:func:`default_iters`: APGD, SEA and
    Tsallis 300, PAdam and DAG 200, PDPGD and ALMA-prox 500, the ensemble
    :data:`ddcat.constants.ITERS` as its one budget); the records state the budget used. One
    setting per (attack, steps or iters, eps).
    ``restarts`` and ``seed`` reach the randomized attacks (``seed=None``: the caller's default,
    e.g. the run's seed). ``class_counts``: pixels per class of the training split, for SEA's
    balanced masked CE (``None``: the caller computes them from the dataset). ``norm``: the threat
    model of every attack, "linf" or "l2" (``None``: the config's ``eval.norm``). ``alpha``: the
    step size of the sweep attacks; ``None``: the norm's default, 0.01 (L-inf, the paper's) or
    ``eps / 4`` (L2, per eps: an L2 step of 0.01 would hardly move an image at eps 0.5)."""

    attacks: tuple[str, ...] = ()
    steps: tuple[int, ...] = ()
    eps: tuple[float, ...] = (DEFAULTS["attack"]["eps"],)
    alpha: float | None = DEFAULTS["attack"]["alpha"]
    iters: int | None = None
    restarts: int = 1
    seed: int | None = None
    class_counts: tuple[int, ...] | None = None
    norm: str | None = None
    min_norm_box: str = "project"  # how dag / pdpgd / alma-prox meet eps (ddcat.attacks.min_norm)

    def __post_init__(self) -> None:
        for name in self.attacks:
            if name not in EVAL_ATTACKS:
                raise DdcatError(f"unknown --attack '{name}'; valid: {', '.join(EVAL_ATTACKS)}")
        if not self.eps:
            raise DdcatError("an evaluation needs at least one eps")
        if self.iters is not None and (isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1):
            raise DdcatError(f"--iters must be at least 1, got {self.iters}")
        if self.restarts < 1:
            raise DdcatError(f"--restarts must be at least 1, got {self.restarts}")
        if self.norm is not None and self.norm not in NORMS:
            raise DdcatError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.norm is not None:  # before anything runs: an attack of another threat model is an error
            for name in self.attacks:
                check_norm(self.norm, name, registry.entry(name).norms)
        if self.min_norm_box not in BOXES:
            raise DdcatError(f"--box must be one of {', '.join(BOXES)}, got {self.min_norm_box!r}")

    @property
    def needs_class_counts(self) -> bool:
        """Whether an attack takes the training split's class counts (balanced losses)."""
        return any(build_attack(a, steps=1).needs_class_counts for a in self.attacks)

    @property
    def needs_budget(self) -> bool:
        """Whether an iteration budget matters (an attack of ``BUDGET_ATTACKS`` is planned)."""
        return any(a in BUDGET_ATTACKS for a in self.attacks)


def default_iters(name: str) -> int:
    """The iteration budget attack ``name`` (of ``BUDGET_ATTACKS``) runs when ``--iters`` is not
    given: its class's (or builder's) default, e.g. ``padam-ce`` 200, ``pdpgd`` 500, ``ensemble``
    :data:`ddcat.constants.ITERS`."""
    return int(build_attack(name).steps)


def sweep_alpha(alpha: float | None, norm: str, eps: float) -> float:
    """The sweep attacks' step size: ``alpha``, or when None the norm's default (0.01 for L-inf,
    ``eps / 4`` for L2; eps 0 gives the L-inf default, the attack then does not move)."""
    if alpha is not None:
        return alpha
    return eps / 4 if norm == "l2" and eps > 0 else DEFAULTS["attack"]["alpha"]


def attack_settings(plan: AttackPlan, sources: Sequence[tuple[str, nn.Module | None]], seed: int = 0) -> list[Setting]:
    """Clean plus one setting per (attack, steps or iters, eps, source), in that nesting order.

    ``sources``: (name, model) pairs; ``("self", None)`` is the white-box setting. ``seed`` is used
    where ``plan.seed`` is None."""
    seed = plan.seed if plan.seed is not None else seed
    norm = plan.norm or "linf"
    settings = [Setting()]
    for name in plan.attacks:
        counts = [plan.iters] if name in BUDGET_ATTACKS else [n for n in plan.steps if n != 0]  # iters None: the attack's default
        for n in counts:
            for eps in plan.eps:
                options: dict = {"seed": seed, "norm": norm}
                accepted = registry.entry(name).parameters()
                if name in RANDOMIZED and "restarts" in accepted:
                    options["restarts"] = plan.restarts
                if "class_counts" in accepted and plan.class_counts is not None:
                    options["class_counts"] = plan.class_counts
                if "box" in accepted:
                    options["box"] = plan.min_norm_box
                alpha = sweep_alpha(plan.alpha, norm, eps)
                attack = build_attack(name, eps=eps, alpha=alpha, steps=n, **options)
                budget = int(attack.steps) if name in BUDGET_ATTACKS else n  # the budget it runs (recorded)
                for source, model in sources:
                    settings.append(Setting(name, attack, budget, eps, source, model, alpha=None if name in BUDGET_ATTACKS else alpha, norm=norm))
    return settings
