"""Comparing a state dict with the one a model expects (checkpoints, pretrained trunks)."""

from __future__ import annotations

from typing import Mapping

import torch


def first_mismatch(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[str, tuple[int, ...] | None, tuple[int, ...]] | None:
    """The first key of ``expected`` that ``state`` lacks or holds with another shape, as
    ``(key, shape in state or None when missing, expected shape)``; None when every key matches.
    Keys of ``state`` that ``expected`` lacks are not looked at."""
    for key, want in expected.items():
        if key not in state:
            return key, None, tuple(want.shape)
        if tuple(state[key].shape) != tuple(want.shape):
            return key, tuple(state[key].shape), tuple(want.shape)
    return None


def mismatch_message(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], missing: str, shape: str) -> str | None:
    """:func:`first_mismatch` in words: ``missing`` or ``shape`` formatted with ``key``, ``have``
    and ``want`` (e.g. ``"{key!r} has shape {have}, the model needs {want}"``); None when every key matches."""
    mismatch = first_mismatch(state, expected)
    if mismatch is None:
        return None
    key, have, want = mismatch
    return (missing if have is None else shape).format(key=key, have=have, want=want)
