"""Per-image worst case over several attacks, and the attack factory."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from ddcat.attacks._core import Score, check_inputs, eval_mode, keep_better
from ddcat.attacks.iterative import BIM, FGSM, PGD, Attack, CosPGD, SegPGD
from ddcat.errors import DdcatError

__all__ = ["WorstCase", "default_worst_case", "build_attack", "ATTACK_NAMES"]


class WorstCase(Attack):
    """Runs every attack and returns, per image, the adversarial image with the fewest correctly
    classified valid pixels (ties: higher per-image cross-entropy; exact ties: the earlier attack).

    This is the "per-image worst case" protocol of later robustness evaluations. The sub-attacks must
    be untargeted. Each sub-attack costs what it costs alone; an attack that does not track its own
    score (BIM, FGSM) costs one extra no-grad forward to be scored. ``eps`` is the largest eps of
    the sub-attacks, so the eps-ball guarantee holds for that eps (and per image for the eps of the
    attack whose result was chosen)."""

    def __init__(self, attacks: Sequence[Attack]) -> None:
        attacks = list(attacks)
        if not attacks:
            raise DdcatError("WorstCase needs at least one attack, got none")
        for a in attacks:
            if not isinstance(a, Attack):
                raise DdcatError(f"WorstCase takes ddcat attacks, got {type(a).__name__}")
            if a.targeted:
                raise DdcatError(f"WorstCase takes untargeted attacks only, got targeted {a!r}")
        self.attacks = attacks
        self.eps = max(a.eps for a in attacks)
        self.steps = max(a.steps for a in attacks)
        self.targeted = False

    def run(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        score: bool = False,
        known: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Score | None]:
        """``known`` maps ``repr(attack)`` to adversarial images the caller already computed for
        this batch (e.g. an evaluation that also reports each attack alone): those sub-attacks are
        only scored (one no-grad forward) instead of being run again."""
        if not isinstance(model, torch.nn.Module):
            raise DdcatError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        images, labels = check_inputs(images, labels)
        known = known or {}
        best_x: torch.Tensor | None = None
        best: Score | None = None
        with eval_mode(model):
            for attack in self.attacks:
                if repr(attack) in known:
                    x = known[repr(attack)]
                    with torch.no_grad():
                        sc = Score.of(model(x), labels, targeted=False)
                else:
                    x, sc = attack.run(model, images, labels, score=True)
                assert sc is not None
                best_x, best = keep_better(best_x, best, x, sc)
        assert best_x is not None
        return best_x.detach(), best

    def __repr__(self) -> str:
        return f"WorstCase({self.attacks!r})"


def default_worst_case(
    eps: float = 0.03,
    alpha: float = 0.01,
    steps: int = 10,
    restarts: int = 1,
    seed: int = 0,
    precision: str = "fp32",
) -> WorstCase:
    """The default per-image worst case: BIM, PGD (CE), SegPGD, CosPGD, PGD with masked CE and PGD
    with the JS divergence, all at the same ``eps``, ``alpha`` and ``steps``."""
    common: dict[str, Any] = dict(restarts=restarts, seed=seed, precision=precision)
    return WorstCase(
        [
            BIM(eps, alpha, steps, precision=precision),
            PGD(eps, alpha, steps, loss="ce", **common),
            SegPGD(eps, alpha, steps, **common),
            CosPGD(eps, alpha, steps, **common),
            PGD(eps, alpha, steps, loss="masked_ce", **common),
            PGD(eps, alpha, steps, loss="js", **common),
        ]
    )


def _fgsm(eps, alpha, steps, **kw):  # alpha and steps do not apply: one step of size eps
    return FGSM(eps, **kw)


_FACTORIES: dict[str, Any] = {
    "fgsm": _fgsm,
    "bim": BIM,
    "pgd": PGD,
    "segpgd": SegPGD,
    "cospgd": CosPGD,
    "masked-ce": lambda eps, alpha, steps, **kw: PGD(eps, alpha, steps, loss="masked_ce", **kw),
    "js": lambda eps, alpha, steps, **kw: PGD(eps, alpha, steps, loss="js", **kw),
    "worst": default_worst_case,
}
_OPTIONS: dict[str, Any] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "segpgd": SegPGD,
    "cospgd": CosPGD,
    "masked-ce": PGD,
    "js": PGD,
    "worst": default_worst_case,
}
#: The names :func:`build_attack` accepts.
ATTACK_NAMES = tuple(_FACTORIES)


def build_attack(name: str, eps: float = 0.03, alpha: float = 0.01, steps: int = 3, **kw: Any) -> Attack:
    """Build an attack by name: ``fgsm`` (ignores ``alpha`` and ``steps``), ``bim``, ``pgd``,
    ``segpgd``, ``cospgd``, ``masked-ce`` (PGD on masked CE), ``js`` (PGD on the JS divergence),
    ``worst`` (:func:`default_worst_case`). Extra keyword options go to the attack's constructor
    (e.g. ``restarts``, ``seed``, ``random_start``, ``targeted``, ``precision``); unknown names and
    options raise :class:`DdcatError`. ``seed`` is accepted by every attack so that callers can pass
    it uniformly; FGSM and BIM are deterministic and ignore it."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _FACTORIES:
        raise DdcatError(f"unknown attack {name!r}; valid names: {', '.join(ATTACK_NAMES)}")
    params = inspect.signature(_OPTIONS[key]).parameters
    fixed = {"eps", "alpha", "steps", "loss", "self"}
    allowed = sorted(p for p in params if p not in fixed)
    if key in ("fgsm", "bim"):
        kw.pop("seed", None)
    for option in kw:
        if option not in allowed:
            raise DdcatError(
                f"attack {key!r} has no option {option!r}; valid options: {', '.join(allowed) or 'none'}"
            )
    return _FACTORIES[key](eps, alpha, steps, **kw)
