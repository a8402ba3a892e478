"""How an attack calls the model: eval mode, the forward seam, one loss-and-gradient pass.

An attack calls ``forward(x) -> logits`` (default: ``model(x)``); the model itself is only put in
eval mode for the duration of the attack. A caller that needs more from the attack's forwards
(DDC-AT's training reads its f_a / f_m heads on the same trunk features during the attack's first
forward) passes its own ``forward``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from ddcat.attacks.checks import check_label_values, check_logits

ForwardFn = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every module in eval mode; restore each module's own previous mode, also on exceptions."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _autocast_off(x: torch.Tensor, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


class Forward:
    """Calls ``forward`` for one attack on one batch; checks the output shape on every call and the
    label values once (after the first call, when the number of classes is known)."""

    def __init__(self, forward: ForwardFn, labels: torch.Tensor, precision: str) -> None:
        self.forward = forward
        self.labels = labels
        self.precision = precision
        self.checked = False

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast_off(x, self.precision):
            out = check_logits(self.forward(x), x)
        if not self.checked:
            check_label_values(self.labels, out.shape[1])
            self.checked = True
        return out

    def loss_and_grad(
        self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward and one input-gradient backward at ``x``: (detached logits, detached
        per-image loss ``(N,)``, gradient of its sum).

        ``loss_fn`` maps float32 logits to per-image values. Only the input gradient is taken
        (``autograd.grad``), so parameters' ``.grad`` stay untouched and no weight gradients are
        computed."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.logits(x)
            loss = loss_fn(logits.float())
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return logits.detach(), loss.detach(), grad

    def no_grad_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(x)
