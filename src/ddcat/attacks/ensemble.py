"""The ensemble protocol: several attacks ("members") on one batch, the per-image worst case.

One protocol serves the per-image worst case (:class:`~ddcat.attacks.worst_case.WorstCase`,
``worst``), SEA (:class:`~ddcat.attacks.sea.SEA`) and the full ensemble (:class:`Ensemble`,
``--attack ensemble``): :func:`member_loop` runs the members in order over one cache (``known``:
results already computed for this batch are only scored) and yields each member's result; the
per-image worst case keeps, per image, the member result with the fewest correctly classified valid
pixels (ties: the higher per-image CE; exact ties: the earlier member). An evaluation
(:mod:`ddcat.evaluation.engine`) scores every member's result on the target and adds the
dataset-level worst case for mIoU (:func:`ddcat.metrics.greedy_miou_selection`), which is not
decomposable per image or per batch.

Early skip (``early_skip=True``, the default of :class:`Ensemble`; off for ``worst`` and SEA): an
image whose pixel accuracy is already 0 under an earlier member is not attacked by the later ones;
its result for each later member is the 0-accuracy result it already has. Pixel accuracy cannot
go lower, so the per-image worst case (aAcc) is exactly what running every member would give. The
greedy mIoU bound stays a bound that an attack achieves (every per-image result is a real
adversarial image in the eps-ball), but it may be higher than without the skip: among several
0-accuracy predictions of one image, their false positives fall on different classes, and a member
that was skipped might have found one that lowers the dataset mIoU more. A skipped member's own
numbers count, for the skipped images, the kept result (records say how many images each member
skipped). The skip is judged on the model the attack runs on (white-box: the target) and is off
when a caller passes its own ``forward`` (which may expect whole batches).

Threat model: that of the members (untargeted; ``norm`` is theirs, L-inf or L2); ``eps`` is the
largest member eps; ``box`` is the minimum-norm members' (``"project"`` or ``"clip"``, None
without such a member).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator, Mapping, Sequence

import torch

from ddcat.attacks.base import Attack, set_field
from ddcat.attacks.checks import check_inputs
from ddcat.attacks.forward import ForwardFn, eval_mode
from ddcat.attacks.scoring import Score, select_images
from ddcat.errors import DdcatError

__all__ = ["Ensemble", "ENSEMBLE_VERSION", "MemberResult", "MemberSet", "member_loop", "ensemble_run", "check_members"]

#: Cite this with the member list (records carry both): it changes when the protocol or the
#: default members change.
ENSEMBLE_VERSION = "ddcat-ensemble-1"


@dataclass
class MemberResult:
    """One member's result on one batch: ``index`` in the member list, adversarial images ``x``
    ``(N, C, H, W)``, their ``score`` on the attacked model, and ``skipped`` ``(N,)`` bool: the
    images the member did not attack (early skip; their ``x`` is the 0-accuracy result kept)."""

    index: int
    x: torch.Tensor
    score: Score
    skipped: torch.Tensor


def check_members(members: Sequence[Attack], what: str) -> tuple[Attack, ...]:
    members = tuple(members)
    if not members:
        raise DdcatError(f"{what} needs at least one attack, got none")
    for a in members:
        if not isinstance(a, Attack):
            raise DdcatError(f"{what} takes ddcat attacks, got {type(a).__name__}")
        if a.targeted:
            raise DdcatError(f"{what} takes untargeted attacks only, got targeted {a!r}")
    return members


def member_loop(
    members: Sequence[Attack],
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    forward: ForwardFn | None = None,
    seed: int | None = None,
    known: Mapping[Attack, torch.Tensor] | None = None,
    early_skip: bool = False,
    score_known: bool = True,
) -> Iterator[MemberResult]:
    """Run ``members`` in order on one batch and yield each one's :class:`MemberResult`.

    ``known`` maps attacks (values) to adversarial images already computed for this batch: those
    are scored (one no-grad forward; ``score_known=False``: not even that, their ``score`` is None,
    for a caller that scores them itself and does not skip) instead of run. ``early_skip``: a
    member runs only on the images still above accuracy 0 under the earlier members (module
    docstring)."""
    if not isinstance(model, torch.nn.Module):
        raise DdcatError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    images, labels = check_inputs(images, labels)
    call = forward if forward is not None else model
    known = known or {}
    skip = early_skip and forward is None
    score_known = score_known or skip
    best_x: torch.Tensor | None = None
    best: Score | None = None
    n = images.shape[0]
    with eval_mode(model):
        for a, attack in enumerate(members):
            todo = torch.ones(n, dtype=torch.bool, device=images.device)
            if skip and best is not None:
                todo = best.bad > 0
            if attack in known:
                x = known[attack]
                todo = torch.ones_like(todo)
                if not score_known:
                    yield MemberResult(a, x.detach(), None, ~todo)  # type: ignore[arg-type]
                    continue
                with torch.no_grad():
                    sc = Score.of(call(x), labels, targeted=False)
            elif bool(todo.all()):
                x, sc = attack.run(model, images, labels, score=True, forward=forward, seed=seed)
            elif not bool(todo.any()):
                assert best_x is not None and best is not None
                x, sc = best_x.clone(), Score(best.bad.clone(), best.objective.clone())
            else:
                assert best_x is not None and best is not None
                xs, scs = attack.run(model, images[todo], labels[todo], score=True, seed=seed)
                assert scs is not None
                x = best_x.clone()
                x[todo] = xs
                sc = Score(best.bad.clone(), best.objective.clone())
                sc.bad[todo], sc.objective[todo] = scs.bad, scs.objective
            assert sc is not None
            yield MemberResult(a, x.detach(), sc, ~todo)
            if best_x is None or best is None:
                best_x, best = x.detach(), sc
            else:
                better = sc.better_than(best)
                best_x, best = select_images(better, x.detach(), best_x), Score.select(better, sc, best)


def ensemble_run(
    members: Sequence[Attack],
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    forward: ForwardFn | None = None,
    seed: int | None = None,
    known: Mapping[Attack, torch.Tensor] | None = None,
    early_skip: bool = False,
) -> tuple[torch.Tensor, Score]:
    """The per-image worst case over ``members`` (see :func:`member_loop`): per image the result
    with the fewest correct valid pixels (ties: higher CE; exact ties: the earlier member)."""
    best_x: torch.Tensor | None = None
    best: Score | None = None
    for r in member_loop(members, model, images, labels, forward=forward, seed=seed, known=known, early_skip=early_skip):
        if best_x is None or best is None:
            best_x, best = r.x, r.score
        else:
            better = r.score.better_than(best)
            best_x, best = select_images(better, r.x, best_x), Score.select(better, r.score, best)
    assert best_x is not None and best is not None
    return best_x.detach(), best


@dataclass(frozen=True)
class MemberSet(Attack):
    """An attack made of member attacks (``members``, a field or a property of the subclass), run by
    the ensemble protocol of this module: :class:`~ddcat.attacks.worst_case.WorstCase`,
    :class:`~ddcat.attacks.sea.SEA` and :class:`Ensemble`. What it derives from its members: ``eps``
    and ``steps`` (the largest; SEA declares its own), ``norm`` ("mixed" if they differ), whether it
    needs class counts and where its first forward is; :meth:`run` is :func:`ensemble_run` with the
    subclass's ``early_skip``."""

    targeted = False
    precision = "fp32"
    is_ensemble: ClassVar[bool] = True

    @property
    def eps(self) -> float:
        return max(a.eps for a in self.members)

    @property
    def steps(self) -> int:
        return max(a.steps for a in self.members)

    @property
    def norm(self) -> str:
        """The members' threat model ("linf" or "l2"; "mixed" if they differ)."""
        norms = {str(getattr(a, "norm", "linf")) for a in self.members}
        return norms.pop() if len(norms) == 1 else "mixed"

    @property
    def needs_class_counts(self) -> bool:
        return any(m.needs_class_counts for m in self.members)

    @property
    def starts_at_clean(self) -> bool:
        return self.members[0].starts_at_clean

    def run(self, model, images, labels, score=False, *, forward=None, seed=None, known=None):
        """As :meth:`Attack.run`, plus ``known`` (see :func:`member_loop`)."""
        return ensemble_run(self.members, model, images, labels, forward=forward, seed=seed, known=known,
                            early_skip=self.early_skip)


@dataclass(frozen=True)
class Ensemble(MemberSet):
    """``Ensemble(members, names=(), early_skip=True)``: the per-image worst case over ``members``
    run in order (cheap, strong members first), with the early skip of the module docstring.

    ``ddcat eval --attack ensemble`` builds it from every registry entry flagged as a member
    (:func:`ddcat.attacks.registry.build_ensemble`) at one budget; ``names`` are the members'
    registry names (records and reports). An evaluation reports each member's numbers, the
    per-image worst case for aAcc, the greedy dataset-level worst case for mIoU over every attack
    of the evaluation, and which member won each image. A per-call ``seed`` reaches every member."""

    members: tuple[Attack, ...] = ()
    names: tuple[str, ...] = ()
    early_skip: bool = True

    label: ClassVar[str] = "ensemble"
    budget: ClassVar[str] = "iters"
    randomized: ClassVar[bool] = True
    version: ClassVar[str] = ENSEMBLE_VERSION
    greedy_pool: ClassVar[str] = "evaluation"  # its greedy mIoU chooses from every attack of the evaluation
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")  # build_ensemble(norm=...) keeps the members that have it

    def __post_init__(self) -> None:
        set_field(self, "members", check_members(self.members, "Ensemble"))
        names = tuple(str(n) for n in self.names) or tuple(f"member-{i}" for i in range(len(self.members)))
        if len(names) != len(self.members):
            raise DdcatError(f"Ensemble got {len(names)} names for {len(self.members)} members")
        set_field(self, "names", names)
        set_field(self, "early_skip", bool(self.early_skip))

    @property
    def box(self) -> str | None:
        """How the minimum-norm members meet eps (their ``box``: "project" or "clip"; "mixed" if they
        differ), None when no member has a box (records carry it)."""
        boxes = {a.box for a in self.members if isinstance(getattr(a, "box", None), str)}
        return None if not boxes else boxes.pop() if len(boxes) == 1 else "mixed"
