"""APGD (Croce & Hein, ICML 2020) for semantic segmentation, L-inf and L2.

Threat model: the L-inf ball of radius ``eps`` around the clean images intersected with [0, 1],
white-box, untargeted; with ``norm="l2"`` the L2 ball of radius ``eps`` per image (APGD-L2 of
Croce & Hein: ``sign(g)`` becomes ``g / ||g||_2`` per image, ``P`` is the projection onto the L2
ball followed by clipping to [0, 1] as in their code (:func:`ddcat.attacks.norms.project_l2`),
the initial step is again ``2 eps`` and the random start a random direction at distance ``eps``).

The algorithm, per image (everything below is per image: step size, best point, checkpoints):

* ``x^(1) = P(x^(0) + eta sign(g^(0)))``; for ``k >= 1``: ``z = P(x^(k) + eta sign(g^(k)))``,
  ``x^(k+1) = P(x^(k) + 0.75 (z - x^(k)) + 0.25 (x^(k) - x^(k-1)))``; ``eta = 2 eps`` at the start,
  ``g^(k)`` the input gradient of the chosen loss at ``x^(k)``, ``P`` the exact projection onto the
  ball (:func:`ddcat.attacks.projection.ball_bounds`).
* ``f`` = the tracked per-image value: the CE (``track="ce"``, default, as in SEA: the step-size
  control follows the CE while the gradient comes from e.g. a masked loss) or the loss itself
  (``track="loss"``). ``x_max`` = the iterate with the highest ``f`` so far (strictly higher).
* Checkpoints ``w_j`` (:func:`apgd_checkpoints`). At ``k = w_j`` the step is halved and the
  iterate restarts from ``x_max`` (with its gradient; the momentum term then uses
  ``x_max - x^(k-1)``) if (1) ``f`` increased, ``f(x^(i+1)) > f(x^(i))``, in fewer than
  ``0.75 (w_j - w_{j-1})`` of the steps since ``w_{j-1}``, or (2) the step was not halved at
  ``w_{j-1}`` and ``f_max`` did not increase since ``w_{j-1}`` (:func:`should_halve`). After a
  restart ``f(x^(k))`` is ``f_max`` for the next comparison.

Where this follows the paper and not fra31/auto-attack's ``autopgd_base.py`` (the authors' code):
checkpoints use ceil as in the paper (the code floors 0.22 N, 0.03 N and 0.06 N separately: the
same for N = 100, earlier and denser checkpoints for small N); condition (1) is a strict ``<`` (the
code uses ``<=``) and its first step compares ``f(x^(1))`` with ``f(x^(0))`` (the code compares with
an unset 0); condition (2) applies from the first checkpoint on (the code starts it at the second).

Segmentation (Croce, Singh & Hein, ECCV 2024): the returned image is, per image, the evaluated
iterate with the FEWEST correctly classified valid pixels over all iterations and restarts (ties:
higher CE; :class:`~ddcat.attacks.scoring.Score`), not ``x_max``. ``early_stop``: an image whose
accuracy reaches 0 leaves the batch (no further passes). ``red_eps``: the iterations are split
0.3 / 0.3 / 0.4 (floors of 0.3 N, the rest last) over radii 2 eps, 1.5 eps, eps; the first stage
starts at a random point of its ball (at the clean images with ``random_start=False``), each next stage at the previous stage's ``x_max`` projected
onto its smaller ball; only the last stage (radius eps) competes for the result and early-stops.
``restarts``: every restart after the first starts at a random point and attacks only the images
not yet at accuracy 0.

Losses with a schedule get ``step = k + 1``, ``total = n`` at ``x^(k)`` of a stage of ``n``
iterations, so each red-eps stage restarts it: ``segpgd`` (``apgd-segpgd``, SegPGD's balanced CE)
weighs with ``lambda = k / (2 n)``, as rse's APGD over its single stage; ``tsallis`` (the
``tsallis`` attack: Tsallis CE with red-eps, TsallisPGD) sweeps q from -2 at ``k = 0`` to 1 at
``k = n - 1`` (:func:`ddcat.attacks.losses.tsallis_q`). With ``track="ce"`` (all named members but
``apgd-spherical``, which tracks its own loss as in rse) ``x_max`` is the highest-CE point, so an
intermediate stage hands the highest-CE point to the next, and the last stage returns the
lowest-accuracy one.

Cost per stage of ``n`` iterations: ``n`` forward + input-gradient passes (at ``x^(0..n-1)``) and one
no-grad forward (at ``x^(n)``), on the images still in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from ddcat.attacks import losses as L
from ddcat.attacks.base import Attack, set_field
from ddcat.attacks.checks import check_class_counts, check_count, check_eps, check_precision, check_seed
from ddcat.attacks.norms import NORMS, Ball, check_norm
from ddcat.attacks.scoring import Score
from ddcat.constants import EPS, ITERS
from ddcat.errors import DdcatError

__all__ = ["APGD", "apgd_checkpoints", "should_halve", "red_eps_stages", "TRACKS"]

MOMENTUM = 0.75
RHO = 0.75
TRACKS = ("ce", "loss")


def apgd_checkpoints(n_iter: int) -> tuple[int, ...]:
    """APGD's checkpoints ``w_0 = 0 < w_1 < ... <= n_iter``: ``w_j = ceil(p_j N)`` with ``p_0 = 0``,
    ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` while ``p_j <= 1``
    (0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99). Exact: ``p_j`` in integer hundredths;
    duplicates (small N) are dropped."""
    n = check_count("n_iter", n_iter, 0)
    p = [0, 22]
    while p[-1] + max(p[-1] - p[-2] - 3, 6) <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return tuple(sorted({-(-q * n // 100) for q in p}))


def should_halve(
    increases: torch.Tensor,
    interval: int,
    best: torch.Tensor,
    best_at_last: torch.Tensor,
    halved_at_last: torch.Tensor,
    rho: float = RHO,
) -> torch.Tensor:
    """APGD's decision at a checkpoint, per image ``(N,)`` bool: condition (1) ``increases <
    rho * interval`` (``increases`` = steps since the last checkpoint whose ``f`` exceeded the
    previous one, ``interval = w_j - w_{j-1}``) or condition (2) not halved at the last checkpoint
    and ``best <= best_at_last`` (``f_max`` did not increase since then)."""
    cond1 = increases.to(torch.float64) < rho * interval
    cond2 = ~halved_at_last & (best <= best_at_last)
    return cond1 | cond2


def red_eps_stages(eps: float, steps: int, red_eps: bool) -> list[tuple[float, int]]:
    """(radius, iterations) of each stage: ``[(eps, steps)]``, or with ``red_eps``
    ``[(2 eps, floor(0.3 N)), (1.5 eps, floor(0.3 N)), (eps, rest)]`` (stages of 0 iterations
    dropped)."""
    if not red_eps:
        return [(eps, steps)]
    first = 3 * steps // 10
    stages = [(2.0 * eps, first), (1.5 * eps, first), (eps, steps - 2 * first)]
    return [(r, n) for r, n in stages if n > 0]


def _keep(state: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[mask] for k, v in state.items()}


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class APGD(Attack):
    """APGD for segmentation, L-inf (see the module docstring for the algorithm and its cost).

    ``APGD(eps=4/255, loss="masked-ce", steps=100)(model, images, labels)``; defaults: eps
    :data:`ddcat.constants.EPS`, ``steps`` :data:`ddcat.constants.ITERS`.

    Args: ``eps`` radius; ``steps`` iterations N per restart (over all red-eps stages); ``loss`` a
    name of :data:`ddcat.attacks.losses.LOSSES` (the gradient's loss); ``track`` "ce" or "loss"
    (what the step-size control follows); ``restarts``; ``random_start`` (the first restart; the
    others always start at random); ``red_eps``; ``early_stop``; ``class_counts`` for
    ``balanced-masked-ce``; ``seed`` of the local ``torch.Generator`` (CPU) of the random starts;
    ``precision`` as for every attack; ``norm`` "linf" or "l2". Deterministic for a given seed."""

    eps: float = EPS
    steps: int = ITERS
    loss: str = "ce"
    track: str = "ce"
    restarts: int = 1
    random_start: bool = True
    red_eps: bool = False
    early_stop: bool = True
    class_counts: tuple[float, ...] | None = None
    seed: int = 0
    precision: str = "fp32"
    norm: str = "linf"

    targeted = False  # class attribute: APGD here is untargeted
    label: ClassVar[str] = "APGD"
    budget: ClassVar[str] = "iters"
    randomized: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __post_init__(self) -> None:
        set_field(self, "eps", check_eps(self.eps))
        set_field(self, "steps", check_count("steps", self.steps, 0))
        set_field(self, "loss", L.loss_name(self.loss))
        if self.track not in TRACKS:
            raise DdcatError(f"APGD track must be one of {', '.join(TRACKS)}, got {self.track!r}")
        set_field(self, "restarts", check_count("restarts", self.restarts, 1))
        set_field(self, "random_start", bool(self.random_start))
        set_field(self, "red_eps", bool(self.red_eps))
        set_field(self, "early_stop", bool(self.early_stop))
        set_field(self, "class_counts", check_class_counts(self.class_counts))
        set_field(self, "seed", check_seed(self.seed))
        set_field(self, "precision", check_precision(self.precision))
        set_field(self, "norm", check_norm(self.norm, "APGD"))

    @property
    def starts_at_clean(self) -> bool:
        return not self.random_start or self.eps == 0

    @property
    def needs_class_counts(self) -> bool:
        return self.loss == "balanced-masked-ce"

    # ------------------------------------------------------------------------- one call

    def _run(self, fwd, images, labels, score, seed):
        n = images.shape[0]
        best_x = images.clone()
        best = Score(
            torch.full((n,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=images.device),
            torch.full((n,), float("-inf"), dtype=torch.float32, device=images.device),
        )
        if self.steps == 0:
            return best_x, None
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
        stages = red_eps_stages(self.eps, self.steps, self.red_eps)

        def record(idx: torch.Tensor, x: torch.Tensor, sc: Score) -> torch.Tensor:
            """Keep the better iterate per image; return which images are at accuracy 0."""
            better = sc.better_than(best[idx])
            best_x[idx[better]] = x[better]
            best.bad[idx[better]] = sc.bad[better]
            best.objective[idx[better]] = sc.objective[better]
            return best.bad[idx] == 0

        for r in range(self.restarts):
            idx = torch.arange(n, device=images.device)
            if r > 0:
                idx = idx[best.bad > 0] if self.early_stop else idx
                if idx.numel() == 0:
                    break
            radius0 = stages[0][0]
            if r == 0 and not self.random_start:
                start = images[idx]
            else:
                start = Ball(self.norm, images, radius0).start(gen)[idx]
            for s, (radius, n_iter) in enumerate(stages):
                last = s == len(stages) - 1
                if s > 0:
                    start = Ball(self.norm, images[idx], radius).project(start)
                idx, start = self._stage(fwd, images, labels, idx, start, radius, n_iter, record if last else None)
                if idx.numel() == 0:
                    break
        return best_x, best

    def _stage(
        self,
        fwd,
        images: torch.Tensor,
        labels: torch.Tensor,
        idx: torch.Tensor,
        start: torch.Tensor,
        radius: float,
        n_iter: int,
        record: Callable[[torch.Tensor, torch.Tensor, Score], torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run of ``n_iter`` iterations at ``radius`` on the images ``idx`` from ``start``.

        Returns the images still in the batch and their ``x_max``. ``record(idx, x, score)`` sees
        every evaluated iterate and returns which images may stop (``early_stop``)."""
        loss_fn = L.LOSSES[self.loss]
        ball_all = Ball(self.norm, images, radius)
        checkpoints = apgd_checkpoints(n_iter)[1:]
        previous_checkpoint = 0

        def evaluate(st: dict[str, torch.Tensor], x: torch.Tensor, k: int, grad: bool):
            y = labels[st["idx"]]
            if grad:
                logits, value, g = fwd.loss_and_grad(
                    x, lambda z: loss_fn(z, y, step=k + 1, total=n_iter, class_counts=self.class_counts)
                )
            else:  # the last iterate: its value and score only
                logits = fwd.no_grad_logits(x).detach()
                value = None
                if self.track == "loss":
                    value = loss_fn(logits.float(), y, step=n_iter, total=n_iter, class_counts=self.class_counts)
                g = torch.zeros_like(x)
            sc = Score.of(logits, y, targeted=False)  # its objective is the per-image CE
            f = sc.objective if self.track == "ce" else value
            return sc, f.float(), g

        st: dict[str, torch.Tensor] = {"idx": idx, "x": start}

        cached: dict[str, object] = {}

        def ball(st: dict[str, torch.Tensor]) -> Ball:
            """The ball of the images still in the batch (recut only when images left it)."""
            if cached.get("n") != st["idx"].numel():
                cached.update(n=st["idx"].numel(), ball=ball_all.subset(st["idx"]))
            return cached["ball"]  # type: ignore[return-value]
        sc, f, g = evaluate(st, start, 0, grad=n_iter > 0)
        st.update(
            x_prev=start, g=g, f_prev=f, x_best=start, g_best=g, f_best=f, f_best_last=f,
            halved_last=torch.zeros_like(f, dtype=torch.bool),
            inc=torch.zeros_like(f, dtype=torch.int64),
            eta=torch.full_like(f, 2.0 * radius),
        )
        st = self._record(st, start, sc, record)

        for k in range(n_iter):
            if st["idx"].numel() == 0:
                break
            x, eta, b = st["x"], _view(st["eta"], st["x"]), ball(st)
            z = b.step(x, st["g"], eta.to(x.dtype))
            if k == 0:
                x_new = z
            else:
                x_new = b.project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - st["x_prev"]))
            sc, f, g = evaluate(st, x_new, k + 1, grad=k + 1 < n_iter)
            up = f > st["f_best"]
            st["inc"] = st["inc"] + (f > st["f_prev"]).long()
            st.update(x_prev=x, x=x_new, g=g, f_prev=f)
            st["x_best"] = torch.where(_view(up, x_new), x_new, st["x_best"])
            st["g_best"] = torch.where(_view(up, g), g, st["g_best"])
            st["f_best"] = torch.where(up, f, st["f_best"])
            if k + 1 in checkpoints:
                halve = should_halve(st["inc"], k + 1 - previous_checkpoint, st["f_best"], st["f_best_last"], st["halved_last"])
                st["eta"] = torch.where(halve, st["eta"] / 2, st["eta"])
                st["x"] = torch.where(_view(halve, x_new), st["x_best"], st["x"])
                st["g"] = torch.where(_view(halve, g), st["g_best"], st["g"])
                st["f_prev"] = torch.where(halve, st["f_best"], st["f_prev"])
                st.update(halved_last=halve, f_best_last=st["f_best"], inc=torch.zeros_like(st["inc"]))
                previous_checkpoint = k + 1
            st = self._record(st, x_new, sc, record)
        return st["idx"], st["x_best"]

    def _record(self, st, x_eval, sc, record):
        """Show the iterate just evaluated to ``record``; with ``early_stop`` drop the images it
        reports at accuracy 0 from the batch."""
        if record is None:
            return st
        done = record(st["idx"], x_eval, sc)
        if self.early_stop and bool(done.any()):
            st = _keep(st, ~done)
        return st
