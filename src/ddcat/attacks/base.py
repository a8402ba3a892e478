"""The call protocol every attack follows.

Attacks are immutable values (frozen dataclasses): validated at construction, comparable,
hashable and printable, so caches and worst cases can key on the attack itself. Calling one::

    adv = attack(model, images, labels, *, forward=None, seed=None)

* ``images``: ``(N, C, H, W)`` floats in [0, 1]; ``labels``: ``(N, H, W)`` integers, 255 = ignore;
  the model maps images to logits ``(N, K, H, W)``.
* ``forward``: the function the attack calls for logits, ``forward(x) -> (N, K, H, W)``; default
  ``model``. The model is put in eval mode for the attack either way (each module's previous mode
  comes back afterwards, also on exceptions).
* ``seed``: overrides the attack's own ``seed`` for this call (attacks without randomness ignore
  it); random draws come from a local ``torch.Generator``: no global RNG state is touched.
* Guarantees, exactly: ``(adv - images).abs() <= eps`` (``norm="l2"``: ``||adv_i - images_i||_2 <= eps``
  per image, in float64, :mod:`ddcat.attacks.norms`) and ``0 <= adv <= 1``; ``adv`` is detached;
  gradients are taken with ``torch.autograd.grad`` with respect to the input only, so no parameter,
  parameter ``.grad`` or buffer changes.
* ``starts_at_clean``: whether the attack's first forward call is at the clean images (no random
  start); a caller may then read extra outputs of that call (DDC-AT's B_clean) instead of paying a
  separate forward.

What an attack declares about itself (class attributes, read by :mod:`ddcat.attacks.registry`,
the one list of attacks): ``label`` (report label), ``budget`` (``"steps"``: a step count, swept by
``--steps``; ``"iters"``: an iteration budget, ``--iters``), ``randomized`` (``restarts`` and
``seed`` apply), ``norms`` (the threat models it supports) and ``is_ensemble`` (it has ``members``
whose results an evaluation scores one by one, see :mod:`ddcat.attacks.ensemble`). Its defaults are
its dataclass defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Hashable

import torch

from ddcat.attacks.checks import check_inputs, check_seed
from ddcat.attacks.forward import Forward, ForwardFn, eval_mode
from ddcat.attacks.scoring import Score
from ddcat.errors import DdcatError


def set_field(attack: object, name: str, value: object) -> None:
    """Set field ``name`` of a frozen dataclass (an attack) to ``value``: for its ``__init__`` /
    ``__post_init__`` only, where the checks store the normalised values (``eps`` as a float, the
    loss's canonical name...). An attack is immutable once built."""
    object.__setattr__(attack, name, value)


@dataclass(frozen=True)
class Attack:
    """Base class: validates the inputs, handles eval mode and the forward seam.

    Subclasses are frozen dataclasses with fields ``eps``, ``steps``, ``targeted`` and
    ``precision`` (or properties of those names) and implement :meth:`_run`, which returns the
    adversarial images and, when asked, their per-image :class:`~ddcat.attacks.scoring.Score`."""

    label: ClassVar[str] = ""  # the report label ("" = the registry name)
    budget: ClassVar[str] = "steps"  # "steps" (--steps, the sweep) | "iters" (--iters)
    randomized: ClassVar[bool] = False  # a random start: restarts and seed apply
    norms: ClassVar[tuple[str, ...]] = ("linf",)  # the threat models it supports
    is_ensemble: ClassVar[bool] = False  # it has ``members`` (an evaluation scores each)

    def __call__(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        forward: ForwardFn | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        adv, _ = self.run(model, images, labels, score=False, forward=forward, seed=seed)
        return adv

    def run(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        score: bool = False,
        *,
        forward: ForwardFn | None = None,
        seed: int | None = None,
    ) -> tuple[torch.Tensor, Score | None]:
        """Attack and, with ``score=True``, also return the per-image score of the result (this may
        cost one extra no-grad forward for attacks that do not track it anyway)."""
        if not isinstance(model, torch.nn.Module):
            raise DdcatError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        images, labels = check_inputs(images, labels)
        seed = self.call_seed(seed)
        with eval_mode(model):
            fwd = Forward(forward if forward is not None else model, labels, self.precision)
            adv, sc = self._run(fwd, images, labels, score, seed)
            if score and sc is None:
                sc = Score.of(fwd.no_grad_logits(adv), labels, self.targeted)
        return adv.detach(), sc

    def call_seed(self, seed: int | None) -> int:
        """The seed of one call: ``seed`` if given, else the attack's own (0 if it has none)."""
        if seed is not None:
            return check_seed(seed)
        return int(getattr(self, "seed", 0))

    @property
    def starts_at_clean(self) -> bool:
        return True

    @property
    def needs_class_counts(self) -> bool:
        """Whether a loss of this attack weighs pixels by the training split's class counts."""
        return False

    def sweep_key(self) -> Hashable | None:
        """Attacks whose n-step result is the n-th iterate of a longer run share one run per batch
        in an evaluation: those return a key (equal keys: one run serves every step count, through
        ``sweep``); the others None."""
        return None

    def _run(
        self, fwd: Forward, images: torch.Tensor, labels: torch.Tensor, score: bool, seed: int
    ) -> tuple[torch.Tensor, Score | None]:
        raise NotImplementedError
