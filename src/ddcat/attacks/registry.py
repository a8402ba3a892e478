"""The one list of attacks: names, labels, budget kinds, defaults, ensemble membership.

Every other list reads this one: :func:`build_attack` and :data:`ATTACK_NAMES` (the factory), the
evaluation's settings (which attacks take ``--steps`` and which ``--iters``, which are randomized),
``ddcat eval --attack`` choices, the training attack's ``config.CHOICES["attack.name"]``, and the
reports' labels, order and colours.

An :class:`Entry` names an attack class and, for a variant (``masked-ce`` is PGD with the masked-CE
loss), the options it fixes. What the class declares about itself (class attributes of
:class:`~ddcat.attacks.base.Attack`): ``label``, ``budget`` (``"steps"``: takes ``--steps``, the
BIM-style sweep; ``"iters"``: takes ``--iters``), ``randomized``, ``norms``; its defaults are its
dataclass defaults (``eps`` = :data:`ddcat.constants.EPS`, ...). The entry adds what is about the
name: a label of its own (variants), ``member`` (the run order in ``--attack ensemble``; 0 = not a
member: members are white-box, untargeted, and run at the ensemble's one budget), ``train``
(allowed as the training attack, ``attack.name``), ``strength`` (the reports' "strongest attack"
preference, :func:`strongest_first`: higher first, 0 = not ranked) and a plot colour.

Adding an attack (the recipe; docs/design.md repeats it):

1. write one module under ``ddcat/attacks/`` with a frozen dataclass subclassing
   :class:`~ddcat.attacks.base.Attack` (docstring: paper, threat model, shapes, cost; checks in
   ``__post_init__``; ``_run`` on the forward seam; deterministic given ``seed``) and its class
   attributes ``label``, ``budget``, ``randomized``, ``norms``;
2. add one line to :data:`ENTRIES` below (``member=N`` to join the ensemble, N its run order:
   cheap, strong members first; ``train=True`` if it may be the training attack);
3. add its tests (its equation on a hand-checkable case; a reference where one exists).

Nothing else changes: the command line, the config, the evaluation, the tables and the plots pick
it up from here (``tests/test_registry.py`` checks that they agree).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ddcat.attacks.alma_prox import ALMAProx
from ddcat.attacks.apgd import APGD
from ddcat.attacks.base import Attack
from ddcat.attacks.dag import DAG
from ddcat.attacks.ensemble import Ensemble
from ddcat.attacks.fgsm_rs import RandomStartFGSM
from ddcat.attacks.iterative import BIM, FGSM, PGD
from ddcat.attacks.min_norm import BOXES, check_box
from ddcat.attacks.norms import NORMS, check_norm
from ddcat.attacks.padam import PAdam
from ddcat.attacks.pdpgd import PDPGD
from ddcat.attacks.sea import SEA
from ddcat.attacks.worst_case import WorstCase, default_worst_case
from ddcat.constants import ALPHA, EPS, ITERS
from ddcat.errors import DdcatError

__all__ = [
    "Entry",
    "ENTRIES",
    "REGISTRY",
    "ATTACK_NAMES",
    "BUDGETS",
    "entry",
    "names",
    "label_of",
    "build_attack",
    "build_ensemble",
    "member_names",
    "name_of",
    "strongest_first",
    "NORMS",
    "BOXES",
]

BUDGETS = ("steps", "iters")


@dataclass(frozen=True)
class Entry:
    """One attack name: ``cls`` (the class, which declares label, budget, randomness and norms),
    ``options`` fixed for this name (a variant), an own ``label`` (default: the class's),
    ``member`` (run order in the ensemble, 0 = not a member), ``train`` (may be the training
    attack), ``strength`` (the reports' preference for "the strongest attack": higher first, 0 =
    not ranked), ``colour`` (plots; None: a colour of the cycle) and ``build`` (a function with the
    keyword parameters of the attack; default ``cls``)."""

    name: str
    cls: type[Attack]
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    member: int = 0
    train: bool = False
    strength: int = 0
    colour: str | None = None
    build: Callable[..., Attack] | None = None

    @property
    def budget(self) -> str:
        return self.cls.budget

    @property
    def randomized(self) -> bool:
        return self.cls.randomized

    @property
    def norms(self) -> tuple[str, ...]:
        return self.cls.norms

    @property
    def display(self) -> str:
        return self.label or self.cls.label or self.name

    def parameters(self) -> tuple[str, ...]:
        """The keyword options a caller may give (the builder's parameters minus the fixed ones)."""
        sig = inspect.signature(self.build or self.cls)
        return tuple(p for p in sig.parameters if p != "self" and p not in self.options)

    def make(self, **kw: Any) -> Attack:
        """The attack with ``kw``; ``class_counts`` reach it only if it uses them (so that equal
        attacks stay equal values, e.g. a PGD-CE inside and outside an ensemble)."""
        counts = kw.pop("class_counts", None)
        attack = (self.build or self.cls)(**self.options, **kw)
        if counts is not None and attack.needs_class_counts:
            attack = (self.build or self.cls)(**self.options, **kw, class_counts=counts)
        return attack


def build_ensemble(
    eps: float = EPS,
    alpha: float = ALPHA,
    steps: int = ITERS,
    seed: int = 0,
    restarts: int = 1,
    class_counts: tuple[float, ...] | None = None,
    precision: str = "fp32",
    early_skip: bool = True,
    norm: str = "linf",
    box: str = "project",
) -> Ensemble:
    """The ensemble of every registry member (:func:`member_names`, in run order), each at the one
    budget ``steps`` (the iteration attacks' iterations, the step attacks' steps), ``eps``, and
    ``alpha`` for the attacks with a step size; ``seed``, ``restarts``, ``class_counts`` and
    ``precision`` reach the members that take them. ``norm="l2"``: the members that support L2
    (registry ``norms``), each in its L2 version; the others are left out. ``box`` reaches the
    minimum-norm members (dag, dag-003, pdpgd, alma-prox: ``"project"`` keeps their iterates in the
    eps-box, ``"clip"`` runs them as rse and clips the result; :mod:`ddcat.attacks.min_norm`)."""
    norm = check_norm(norm, "ensemble")
    box = check_box(box)
    options = {"seed": seed, "restarts": restarts, "class_counts": class_counts, "precision": precision, "norm": norm,
               "box": box}
    members, member_list = [], tuple(n for n in member_names() if norm in REGISTRY[n].norms)
    for name in member_list:
        e = REGISTRY[name]
        own = {k: v for k, v in options.items() if k in e.parameters() and (k != "seed" or e.randomized)}
        if own.get("class_counts") is None:
            own.pop("class_counts", None)
        members.append(e.make(**_options(e, eps, alpha, steps, own)))
    return Ensemble(tuple(members), member_list, early_skip)


# The list. Its order is the reports' order (clean first, then these). ``member`` is the ensemble's
# run order: the APGD members early-stop the images they fool, so they go first and leave the
# PGD-family members only the images still standing (early skip).
ENTRIES: tuple[Entry, ...] = (
    Entry("fgsm", FGSM, colour="#aec7e8"),
    Entry("fgsm-rs", RandomStartFGSM, train=True, colour="#c5b0d5"),
    Entry("bim", BIM, train=True, colour="#1f77b4"),
    Entry("pgd", PGD, member=5, train=True, colour="#ff7f0e"),
    Entry("segpgd", PGD, {"loss": "segpgd"}, "SegPGD", member=6, train=True, colour="#2ca02c"),
    Entry("cospgd", PGD, {"loss": "cospgd"}, "CosPGD", member=7, colour="#9467bd"),
    Entry("masked-ce", PGD, {"loss": "masked-ce"}, "masked-CE", member=8, colour="#8c564b"),
    Entry("js", PGD, {"loss": "js"}, "JS", member=9, colour="#e377c2"),
    Entry("worst", WorstCase, label="worst", strength=2, colour="#d62728", build=default_worst_case),
    Entry("apgd", APGD, strength=1, colour="#17becf"),
    Entry("apgd-ce", APGD, {"loss": "ce", "red_eps": True}, "APGD-CE", member=1, colour="#9edae5"),
    Entry("apgd-masked-ce", APGD, {"loss": "masked-ce", "red_eps": True}, "APGD-masked-CE", member=2, colour="#c49c94"),
    Entry("apgd-balanced-masked-ce", APGD, {"loss": "balanced-masked-ce", "red_eps": True}, "APGD-bal-masked-CE", member=3, colour="#f7b6d2"),
    Entry("apgd-js", APGD, {"loss": "js", "red_eps": True}, "APGD-JS", member=4, colour="#dbdb8d"),
    Entry("tsallis", APGD, {"loss": "tsallis", "red_eps": True}, "Tsallis", member=4, colour="#393b79"),
    Entry("apgd-segpgd", APGD, {"loss": "segpgd", "red_eps": True}, "APGD-SegPGD", member=4, colour="#637939"),
    Entry("apgd-spherical", APGD, {"loss": "masked-spherical", "track": "loss", "red_eps": True}, "APGD-spherical",
          member=4, colour="#8c6d31"),
    Entry("padam-ce", PAdam, {"loss": "ce"}, "PAdam-CE", member=4, colour="#843c39"),
    Entry("padam-cos", PAdam, {"loss": "cosine"}, "PAdam-Cos", member=4, colour="#7b4173"),
    Entry("sea", SEA, strength=3, colour="#000000"),
    Entry("dag", DAG, label="DAG-0.001", member=10, colour="#393b79"),
    Entry("dag-003", DAG, {"gamma": 0.003}, "DAG-0.003", member=11, colour="#5254a3"),
    Entry("pdpgd", PDPGD, member=12, colour="#637939"),
    Entry("alma-prox", ALMAProx, member=13, colour="#8c6d31"),
    Entry("ensemble", Ensemble, strength=4, colour="#7f7f7f", build=build_ensemble),
)

#: Name -> entry, in the order of :data:`ENTRIES`.
REGISTRY: dict[str, Entry] = {e.name: e for e in ENTRIES}
assert len(REGISTRY) == len(ENTRIES), "attack names must be unique"
#: The names :func:`build_attack` accepts.
ATTACK_NAMES = tuple(REGISTRY)


def canonical(name: object) -> str:
    return str(name).strip().lower().replace("_", "-")


def entry(name: object) -> Entry:
    """The entry of ``name`` (any case, ``_`` = ``-``); an unknown name is a :class:`DdcatError`."""
    key = canonical(name)
    if key not in REGISTRY:
        raise DdcatError(f"unknown attack {name!r}; valid names: {', '.join(ATTACK_NAMES)}")
    return REGISTRY[key]


def names(*, budget: str | None = None, randomized: bool | None = None, member: bool | None = None,
          train: bool | None = None) -> tuple[str, ...]:
    """Registry names, in registry order, filtered by budget kind, randomness, ensemble membership
    (``member=True``: in the ensemble's run order) or training use."""
    out = [
        e for e in ENTRIES
        if (budget is None or e.budget == budget)
        and (randomized is None or e.randomized == randomized)
        and (member is None or (e.member > 0) == member)
        and (train is None or e.train == train)
    ]
    if member:
        out.sort(key=lambda e: e.member)  # stable: ties keep the registry order
    return tuple(e.name for e in out)


def member_names() -> tuple[str, ...]:
    """The ensemble's members, in run order."""
    return names(member=True)


def strongest_first() -> tuple[str, ...]:
    """The attacks a report prefers as "the strongest attack" of a model, strongest first (the
    entries' ``strength``): the ensemble (its greedy mIoU is never above any other attack's of the
    same evaluation, eps and source), then SEA, the per-image worst case and APGD."""
    ranked = sorted((e for e in ENTRIES if e.strength > 0), key=lambda e: -e.strength)
    return tuple(e.name for e in ranked)


def label_of(name: str) -> str:
    """The report label of ``name`` (the name itself when it is not registered, e.g. ``clean``)."""
    key = canonical(name)
    return REGISTRY[key].display if key in REGISTRY else str(name)


def name_of(attack: Attack) -> str:
    """The registry name of an attack value: the entry of its class whose fixed options it has
    (the most specific), e.g. ``APGD(loss="js", red_eps=True)`` -> ``apgd-js``."""
    best: Entry | None = None
    for e in ENTRIES:
        if type(attack) is e.cls and all(getattr(attack, k, None) == v for k, v in e.options.items()):
            if best is None or len(e.options) > len(best.options):
                best = e
    if best is None:
        return type(attack).__name__.lower()
    if best.cls is PGD and not best.options and getattr(attack, "loss", "ce") != "ce":
        return f"pgd-{attack.loss}"
    if best.cls is APGD and not best.options and getattr(attack, "loss", "ce") != "ce":
        return f"apgd-{attack.loss}" + ("" if getattr(attack, "red_eps", False) else "-no-red-eps")
    return best.name


def _options(e: Entry, eps: float, alpha: float, steps: int | None, kw: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``e``'s builder: eps / alpha / steps where it takes them, then ``kw``
    (unknown options are an error naming the valid ones)."""
    allowed = e.parameters()
    out: dict[str, Any] = {}
    given = {"eps": eps, "alpha": alpha, "steps": steps}
    for key, value in given.items():
        if key in allowed and value is not None:
            out[key] = value
    kw = dict(kw)
    if not e.randomized:
        kw.pop("seed", None)  # accepted everywhere so that callers pass it uniformly
    if "norm" in kw:  # a norm the attack does not support is an error naming both
        kw["norm"] = check_norm(kw["norm"], e.name, e.norms)
        if "norm" not in allowed:
            kw.pop("norm")  # an attack of one threat model (L-inf): nothing to pass
    for option in kw:
        if option not in allowed or option in given:
            valid = [p for p in allowed if p not in given]
            raise DdcatError(f"attack {e.name!r} has no option {option!r}; valid options: {', '.join(valid) or 'none'}")
    out.update(kw)
    return out


def build_attack(name: str, eps: float = EPS, alpha: float = ALPHA, steps: int | None = None, **kw: Any) -> Attack:
    """Build an attack by its registry name (:data:`ATTACK_NAMES`). ``eps``, ``alpha`` and ``steps``
    reach the attacks that take them (``fgsm`` takes only eps; the ``iters`` attacks set their own
    step size and read ``steps`` as their iteration budget; ``steps=None``: the attack's default);
    extra keyword options go to the attack's constructor (e.g. ``restarts``, ``seed``,
    ``random_start``, ``targeted``, ``precision``, ``class_counts``, ``norm``: "linf" or "l2" where
    the class's ``norms`` has it, else a one-line error naming the attack and the norm); unknown names
    and options raise :class:`DdcatError`. ``seed`` is accepted by every attack; those without randomness ignore it."""
    e = entry(name)
    return e.make(**_options(e, eps, alpha, steps, kw))
