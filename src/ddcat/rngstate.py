"""The random-number state a training checkpoint carries, checked before it is restored (issue 20, section 3).

``last.pt`` holds ``rng``: one entry per process, each ``{"torch": uint8 tensor, "numpy": [name,
int64 tensor of 624 words, pos, has_gauss, cached_gaussian], "python": (version, 625 ints, gauss),
"cuda": uint8 tensor or None}`` (written by ``ddcat/checkpoint/io.py``). ``torch.set_rng_state`` and
friends fail on a crafted value with a traceback (``Expected a CPUGeneratorImplState of size
5056``, ``Invalid mt19937 state``); :func:`check_rng_state` names the checkpoint and the field
instead, before anything is written: first the shapes (:func:`rng_state_problem`), then the contents,
by restoring every state into a throwaway generator (a CPU ``torch.Generator``, a
``numpy.random.RandomState``, a ``random.Random`` and, where CUDA is present, a CUDA
``torch.Generator``), so that a state of the right size whose content a generator refuses (a CPU
state of 5056 zero bytes) is refused here too, and the process's own generators are never touched.
"""

from __future__ import annotations

import numbers
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddcat.errors import DdcatError, show

#: Bytes of a CPU generator's state (``torch.get_rng_state()``; 5056 for MT19937 in torch 2.x).
CPU_STATE_BYTES = int(torch.get_rng_state().numel())
#: Bytes of a CUDA (Philox) generator's state: seed and offset, 8 bytes each.
CUDA_STATE_BYTES = 16
MT_WORDS = 624  # numpy's and Python's Mersenne Twister


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _byte_tensor(value: Any, size: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1 and value.numel() == size


def rng_state_problem(state: Any) -> tuple[str, str] | None:
    """``(field, what is wrong)`` for one process's RNG state, or ``None`` when it can be restored."""
    if not isinstance(state, dict):
        return "", f"must be a mapping with torch, numpy, python and cuda, got {show(type(state).__name__)}"
    missing = [k for k in ("torch", "numpy", "python") if k not in state]
    if missing:
        return missing[0], "is missing"
    if not _byte_tensor(state["torch"], CPU_STATE_BYTES):
        return "torch", f"must be a uint8 tensor of {CPU_STATE_BYTES} bytes (a CPU generator state), got {_describe(state['torch'])}"
    cuda = state.get("cuda")
    if cuda is not None and not _byte_tensor(cuda, CUDA_STATE_BYTES):
        return "cuda", f"must be null or a uint8 tensor of {CUDA_STATE_BYTES} bytes (a CUDA generator state), got {_describe(cuda)}"
    np_state = state["numpy"]
    if not isinstance(np_state, (list, tuple)) or len(np_state) != 5:
        return "numpy", f"must be [name, 624 words, pos, has_gauss, cached_gaussian], got {_describe(np_state)}"
    name, words, pos, has_gauss, gauss = np_state
    if name != "MT19937":
        return "numpy", f"names generator {show(name)}, expected 'MT19937'"
    if not (isinstance(words, torch.Tensor) and words.dim() == 1 and words.numel() == MT_WORDS and words.dtype == torch.int64):
        return "numpy", f"must hold {MT_WORDS} int64 words, got {_describe(words)}"
    if int(words.min()) < 0 or int(words.max()) >= 2**32:
        return "numpy", "holds words outside 0..2^32-1"
    if not _is_int(pos) or not 0 <= pos <= MT_WORDS:
        return "numpy", f"position must be an integer in 0..{MT_WORDS}, got {show(pos)}"
    if not _is_int(has_gauss) or has_gauss not in (0, 1) or not isinstance(gauss, numbers.Real):
        return "numpy", f"has_gauss / cached_gaussian must be 0 or 1 and a number, got {show(has_gauss)}, {show(gauss)}"
    py = state["python"]
    if not isinstance(py, (list, tuple)) or len(py) != 3:
        return "python", f"must be (version, 625 integers, gauss_next), got {_describe(py)}"
    version, internal, gauss_next = py
    if version != 3:
        return "python", f"version must be 3, got {show(version)}"
    if not isinstance(internal, (list, tuple)) or len(internal) != MT_WORDS + 1 or not all(_is_int(v) and 0 <= v < 2**32 for v in internal):
        return "python", f"must hold {MT_WORDS + 1} integers in 0..2^32-1, got {_describe(internal)}"
    if not 1 <= internal[-1] <= MT_WORDS:  # random.setstate's index: a saved state holds 1..624 (625 is refused by CPython)
        return "python", f"index must lie in 1..{MT_WORDS}, got {show(internal[-1])}"
    if gauss_next is not None and not isinstance(gauss_next, numbers.Real):
        return "python", f"gauss_next must be null or a number, got {show(gauss_next)}"
    return None


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    return show(value)


def restore_problem(state: dict[str, Any]) -> tuple[str, str] | None:
    """``(field, what is wrong)`` when a generator refuses the content of a state that
    :func:`rng_state_problem` accepted, found by restoring it into throwaway generators exactly as
    ``training/loop.py`` restores it into the process's own; ``None`` when every one accepts it."""
    attempts = [
        ("torch", lambda: torch.Generator().set_state(state["torch"])),
        ("numpy", lambda: np.random.RandomState().set_state(
            (state["numpy"][0], state["numpy"][1].numpy().astype(np.uint32), *state["numpy"][2:]))),
        ("python", lambda: random.Random().setstate(state["python"])),
    ]
    if state.get("cuda") is not None and torch.cuda.is_available():
        attempts.append(("cuda", lambda: torch.Generator(device="cuda").set_state(state["cuda"])))
    for field, restore in attempts:
        try:
            restore()
        except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            return field, f"is refused by the generator ({show(reason)})"
    return None


def check_rng_state(states: Any, path: str | Path) -> None:
    """A one-line :class:`DdcatError` naming ``path`` and the field unless ``states`` (the
    checkpoint's ``rng``: one state per process) can be restored as written."""
    if not isinstance(states, list) or not states:
        raise DdcatError(f"checkpoint {path}: 'rng' (the random-number state) is missing or malformed")
    for rank, state in enumerate(states):
        problem = rng_state_problem(state) or restore_problem(state)
        if problem is not None:
            field, what = problem
            where = f"rng[{rank}]" + (f".{field}" if field else "")
            raise DdcatError(f"checkpoint {path}: '{where}' {what}")
