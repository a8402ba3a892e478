"""Attacks by name: what the command line, the configs and the experiments ask for."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ddcat.attacks.apgd import APGD
from ddcat.attacks.base import Attack
from ddcat.attacks.iterative import BIM, FGSM, PGD, CosPGD, SegPGD
from ddcat.attacks.sea import SEA
from ddcat.attacks.worst_case import default_worst_case
from ddcat.constants import ALPHA, EPS
from ddcat.errors import DdcatError

__all__ = ["ATTACK_NAMES", "build_attack"]


def _fgsm(eps, alpha, steps, **kw):  # alpha and steps do not apply: one step of size eps
    return FGSM(eps, **kw)


def _pgd_with(loss: str) -> Callable[..., Attack]:
    return lambda eps, alpha, steps, **kw: PGD(eps, alpha, steps, loss=loss, **kw)


def _apgd(eps, alpha, steps, **kw):  # APGD sets its own step size: alpha does not apply
    return APGD(eps=eps, steps=steps, **kw)


def _sea(eps, alpha, steps, **kw):
    return SEA(eps=eps, steps=steps, **kw)


# name -> (builder(eps, alpha, steps, **options), the callable whose keyword parameters are the options)
_ATTACKS: dict[str, tuple[Callable[..., Attack], Callable[..., Any]]] = {
    "fgsm": (_fgsm, FGSM),
    "bim": (BIM, BIM),
    "pgd": (PGD, PGD),
    "segpgd": (SegPGD, SegPGD),
    "cospgd": (CosPGD, CosPGD),
    "masked-ce": (_pgd_with("masked-ce"), PGD),
    "js": (_pgd_with("js"), PGD),
    "worst": (default_worst_case, default_worst_case),
    "apgd": (_apgd, APGD),
    "sea": (_sea, SEA),
}
#: The names :func:`build_attack` accepts.
ATTACK_NAMES = tuple(_ATTACKS)


def build_attack(name: str, eps: float = EPS, alpha: float = ALPHA, steps: int = 3, **kw: Any) -> Attack:
    """Build an attack by name: ``fgsm`` (ignores ``alpha`` and ``steps``), ``bim``, ``pgd``,
    ``segpgd``, ``cospgd``, ``masked-ce`` (PGD on masked CE), ``js`` (PGD on the JS divergence),
    ``worst`` (:func:`~ddcat.attacks.worst_case.default_worst_case`), ``apgd`` and ``sea`` (ignore
    ``alpha``: APGD controls its own step size). Extra keyword options go to the attack's
    constructor (e.g. ``restarts``, ``seed``, ``random_start``, ``targeted``, ``precision``,
    ``loss``/``red_eps``/``class_counts`` for APGD, ``losses``/``spherical``/``class_counts`` for
    SEA); unknown names and options raise :class:`DdcatError`. ``seed`` is accepted by every attack
    so that callers can pass it uniformly; FGSM and BIM are deterministic and ignore it."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _ATTACKS:
        raise DdcatError(f"unknown attack {name!r}; valid names: {', '.join(ATTACK_NAMES)}")
    build, options_of = _ATTACKS[key]
    fixed = {"eps", "alpha", "steps", "self"} | ({"loss"} if key in ("masked-ce", "js") else set())
    allowed = sorted(p for p in inspect.signature(options_of).parameters if p not in fixed)
    if key in ("fgsm", "bim"):
        kw.pop("seed", None)
    for option in kw:
        if option not in allowed:
            raise DdcatError(
                f"attack {key!r} has no option {option!r}; valid options: {', '.join(allowed) or 'none'}"
            )
    return build(eps, alpha, steps, **kw)
