"""Checkpoint files on disk and the training state they carry; nothing here knows a model.

* Writing: :func:`atomic_save` goes to a temporary file in the same folder, is flushed and fsynced,
  then renamed over the target, with Ctrl-C held back meanwhile (:func:`sigint_deferred`), so a
  crash never leaves a truncated ``last.pt`` behind; a full disk is a one-line error.
  :func:`save_last` rotates ``last.pt`` to ``last.prev.pt`` on every save.
* Reading: :func:`read_checkpoint` is ``torch.load(weights_only=True)`` and the checks of the
  fields every checkpoint has (``format``, ``model`` a state dict); the ``model_spec`` is checked
  by its kind (:mod:`ddcat.checkpoint.spec`).
* Resuming: the training state of ``last.pt`` (:func:`training_checkpoint`), checked by
  :func:`check_resumable` and :func:`ddcat.rngstate.check_rng_state`; the random-number state of
  every process saved by :func:`rng_state` and restored by :func:`set_rng_state`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from ddcat.distributed import DistContext
from ddcat.errors import DdcatError, show
from ddcat.outdir import check_readable_file
from ddcat.rngstate import check_rng_state

FORMAT = "ddcat"
VERSION = 1
#: ``last.pt``'s predecessor, kept by :func:`save_last`.
PREV_NAME = "last.prev.pt"


# ----------------------------------------------------------------------------- writing


def write_error(path: Path, exc: BaseException) -> DdcatError:
    """A one-line error for a failed write (full disk, file-size limit, permissions)."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on device"
    elif code == errno.EFBIG:
        reason = "file too large (file-size limit reached)"
    elif isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:
        try:  # torch.save reports a short write as "unexpected pos": look at the disk
            full = shutil.disk_usage(path.parent).free < 1 << 20
        except OSError:
            full = False
        reason = "no space left on device" if full else f"the write failed ({show(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})"
    return DdcatError(f"cannot write {path}: {reason}")


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done, then raise it. A KeyboardInterrupt raised inside
    ``torch.save``'s C++ writer callback aborts the whole process (a C++ ``terminate``), so a
    checkpoint write is never interrupted halfway. Outside the main thread: no effect."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sigint_deferred():
        _atomic_save(obj, path)


def _atomic_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        error = write_error(path, exc)  # before the temporary is deleted: it is what filled the disk
        _unlink(tmp)
        raise error from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """A bare state dict, as ``.safetensors`` or a ``torch.save`` file by ``path``'s suffix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        os.replace(tmp, path)
    else:
        atomic_save(state, path)


def save_last(path: Path, payload: dict[str, Any]) -> None:
    """Atomically replace ``last.pt``, keeping the one before as ``last.prev.pt``.

    At every instant ``last.pt`` exists (once written) and holds a whole checkpoint: the previous
    one becomes ``last.prev.pt`` through a hard link (a copy where links are not supported) before
    the new file is renamed over ``last.pt``."""
    tmp = path.with_name(path.name + ".new")
    atomic_save(payload, tmp)
    try:
        if path.exists():
            prev_tmp = path.with_name(f".{PREV_NAME}.link")
            if prev_tmp.exists():
                prev_tmp.unlink()
            try:
                os.link(path, prev_tmp)
            except OSError:
                shutil.copy2(path, prev_tmp)
            os.replace(prev_tmp, path.with_name(PREV_NAME))
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Temporary files a kill during a save left behind (``.last.pt.new.*.tmp`` and the like)."""
    stale = [p for pattern in (".last.pt*.tmp", "last.pt.new", f".{PREV_NAME}.link") for p in out.glob(pattern)]
    for p in stale:
        try:
            p.unlink()
        except OSError:
            pass
    return stale


# ----------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ddcat checkpoint file read with ``weights_only=True``; its ``model`` checked to be a state
    dict. Every failure is a one-line DdcatError naming the file. ``model_spec`` is left to its kind."""
    path = Path(path)
    check_readable_file(path, "checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise DdcatError(
                f"checkpoint {path} contains Python objects that are not allowed in a checkpoint "
                "(only tensors and plain data are); it was not loaded"
            ) from None
        raise DdcatError(f"checkpoint {path} is corrupt or not a ddcat checkpoint ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt / foreign file
        raise DdcatError(f"checkpoint {path} is corrupt or not a ddcat checkpoint ({first_line(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt or "model_spec" not in ckpt:
        raise DdcatError(f"checkpoint {path} is not a ddcat checkpoint (missing 'format'/'model'/'model_spec')")
    return ckpt


def check_state_dict(state: Any, path: str | Path) -> None:
    """``model`` must be a state dict (names -> tensors)."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DdcatError(f"checkpoint {path}: 'model' must be a state dict (names -> tensors), got {type(state).__name__}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, quoted characters shown safely (or its type's name)."""
    text = str(exc).strip()
    return show(text.splitlines()[0])[1:-1] if text else type(exc).__name__


# ----------------------------------------------------------------------------- training state


def training_checkpoint(
    model_spec: dict[str, Any], model: torch.nn.Module, cfg: dict[str, Any], optimizer: torch.optim.Optimizer,
    iteration: int, poly_power: float, batches_per_epoch: int, rng: list[Any], world: int, method_state: list[Any] | None,
) -> dict[str, Any]:
    """What ``last.pt`` holds: the model and every piece of state ``--resume`` continues from."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": model_spec,
        "model": model.state_dict(),
        "config": cfg,
        "optimizer": optimizer.state_dict(),
        "scheduler": {"kind": "poly", "iteration": iteration, "power": poly_power},
        "iteration": iteration,
        "data_position": {"iteration": iteration, "batches_per_epoch": batches_per_epoch},
        "rng": rng,
        "world_size": world,
        **({"method_state": method_state} if method_state is not None else {}),
    }


def check_resumable(ckpt: dict[str, Any], path: str | Path) -> None:
    """The training state ``--resume`` needs: optimizer, RNG state, iteration (one-line errors)."""
    if "exported_from" in ckpt or "optimizer" not in ckpt:
        what = "an exported model (ddcat export)" if "exported_from" in ckpt else "not a training checkpoint"
        raise DdcatError(f"checkpoint {path} is {what}: it has no optimizer state to resume from; resume from the run's last.pt")
    if not isinstance(ckpt["optimizer"], dict) or not {"state", "param_groups"} <= set(ckpt["optimizer"]):
        raise DdcatError(f"checkpoint {path}: 'optimizer' is not an optimizer state")
    if not isinstance(ckpt.get("rng"), list) or not ckpt["rng"]:
        raise DdcatError(f"checkpoint {path}: 'rng' (the random-number state) is missing or malformed")
    iteration = ckpt.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise DdcatError(f"checkpoint {path}: 'iteration' must be an integer >= 0, got {show(iteration)}")


def check_training_state(ckpt: dict[str, Any], path: str | Path, iters: int) -> None:
    """:func:`check_resumable`, the generator states (crafted ones named before anything is
    written) and an iteration within ``train.iters``."""
    check_resumable(ckpt, path)
    check_rng_state(ckpt["rng"], path)
    if ckpt["iteration"] > iters:
        raise DdcatError(f"checkpoint {path} is at iteration {ckpt['iteration']}, past train.iters={iters}; raise train.iters to continue training")


def resume_path(out: Path, resume: str | Path | bool) -> Path:
    """The file ``--resume`` names: ``OUT/last.pt`` (``True``), else the path given; ``last.prev.pt``
    when ``last.pt`` is missing (a kill between the two renames of an older ddcat)."""
    path = out / "last.pt" if resume is True else Path(resume)
    prev = path.with_name(PREV_NAME)
    if resume is True and not path.exists() and prev.is_file():
        print(f"ddcat: {path} is missing; resuming from {prev}", file=sys.stderr)
        path = prev
    return path


def intact_predecessor(path: Path, exc: DdcatError) -> DdcatError:
    """``exc`` (``last.pt`` unreadable) with the way out when ``last.prev.pt`` is there."""
    prev = path.with_name(PREV_NAME)
    if path.name == "last.pt" and prev.is_file():
        return DdcatError(f"{exc}; the previous checkpoint is intact: resume with --resume {prev}")
    return exc


def per_process(state: Any, ctx: DistContext) -> list[Any]:
    """``state`` of every process, in rank order (all processes call it)."""
    if not ctx.enabled:
        return [state]
    gathered: list[Any] = [None] * ctx.world
    dist.all_gather_object(gathered, state)
    return gathered


def rng_state(ctx: DistContext) -> list[Any]:
    """The torch, numpy, Python and CUDA generator states of every process (the checkpoint's ``rng``)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None,
    }
    return per_process(state, ctx)


def set_rng_state(states: list[Any], ctx: DistContext) -> None:
    """Restore this process's generators from a checkpoint's ``rng`` (checked by :func:`check_training_state`)."""
    if len(states) != ctx.world:
        return  # a different world size: the per-iteration reseed keeps the run deterministic anyway
    s = states[ctx.rank]
    torch.set_rng_state(s["torch"])
    np.random.set_state((s["numpy"][0], s["numpy"][1].numpy().astype(np.uint32), *s["numpy"][2:]))
    random.setstate(s["python"])
    if s.get("cuda") is not None and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], ctx.device)


def own_entry(ckpt: dict[str, Any], key: str, path: Path, ctx: DistContext) -> Any:
    """This process's entry of a per-process field (``method_state``); None when the checkpoint has
    none or was written by another number of processes (the carried state restarts, as at iteration 0)."""
    states = ckpt.get(key)
    if states is None:
        return None
    if not isinstance(states, list) or not states:
        raise DdcatError(f"checkpoint {path}: '{key}' must be a list with one entry per process")
    return states[ctx.rank] if len(states) == ctx.world else None
