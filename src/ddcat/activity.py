"""What a command is doing right now, so that an out-of-memory failure can say it (issue 20, section 2).

The training loop, the evaluation engine and the certification call :func:`note` once per batch (per image) (a dict assignment,
no cost); when an allocation fails, the command line (``ddcat.cli.main``) reads :func:`last` and
prints one line: what was being done, at which batch size and image size, and which config keys
lower the memory (:func:`out_of_memory_message`). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Sequence

_LAST: dict[str, Any] = {}


def note(what: str, batch: int, size: Sequence[int], remedy: str) -> None:
    """Record the current work: ``what`` (e.g. "evaluating bim n=3"), the batch size, the image
    size ``(height, width)`` and ``remedy`` (the keys to change if it runs out of memory)."""
    _LAST.clear()
    _LAST.update(what=what, batch=int(batch), size=tuple(int(s) for s in size), remedy=remedy)


def clear() -> None:
    _LAST.clear()


def last() -> dict[str, Any]:
    """The last :func:`note` (empty when nothing was noted since :func:`clear`)."""
    return dict(_LAST)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: ``MemoryError``, ``torch.OutOfMemoryError`` (CUDA,
    MPS) or the CPU allocator's ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).split("\n", 1)[0].lower()
    return "can't allocate memory" in text or "out of memory" in text or "failed to allocate" in text


def out_of_memory_message(exc: BaseException, doing: dict[str, Any] | None = None) -> str:
    """One line: what ran out of memory, where, and what to change."""
    doing = last() if doing is None else doing
    kind = "GPU" if "cuda" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError" else "CPU"
    if not doing:
        return f"out of {kind} memory; use smaller batches or images (train.batch_size, eval.batch_size, eval.mode=slide with eval.crop_size)"
    h, w = doing["size"] if len(doing["size"]) == 2 else (0, 0)
    return (
        f"out of {kind} memory while {doing['what']} (batch size {doing['batch']}, images {w}x{h}); "
        f"{doing['remedy']}"
    )


EVAL_REMEDY = "lower eval.batch_size, or set eval.mode=slide with a smaller eval.crop_size"
TRAIN_REMEDY = "lower train.batch_size (or raise train.accum_steps) or train.crop_size"
CERTIFY_REMEDY = ("lower --batch-size, the noisy samples per forward pass (evaluation.certify.batch_size in an experiment file; "
                  "the certificate does not depend on it)")
