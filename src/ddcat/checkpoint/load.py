"""Whole checkpoints: read and checked (the file by :mod:`ddcat.checkpoint.io`, the model spec by
its kind, :mod:`ddcat.checkpoint.spec`), then loaded into a model, exported, picked for ``--resume``,
or written from a config. A factory a checkpoint names runs only where ``trust`` allows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ddcat.checkpoint.io import (
    FORMAT,
    VERSION,
    atomic_save,
    check_state_dict,
    check_training_state,
    first_line,
    intact_predecessor,
    read_checkpoint,
    resume_path,
)
from ddcat.checkpoint.spec import config_spec, initial_weights, read_spec, spec_of
from ddcat.errors import DdcatError, show
from ddcat.models import Segmenter
from ddcat.models.user import Trust


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ddcat checkpoint safely; every failure is a one-line DdcatError naming the file.

    The fields every checkpoint has are checked here: ``model_spec`` (with the config's rules, by
    its kind) and ``model`` (a state dict of tensors). Training fields are checked by
    :func:`ddcat.checkpoint.io.check_resumable`.
    """
    ckpt = read_checkpoint(path)
    ckpt["model_spec"] = read_spec(ckpt["model_spec"], path).fields
    check_state_dict(ckpt["model"], path)
    return ckpt


def load_model(path: str | Path, expect: dict[str, Any] | None = None, trust: Trust = Trust()) -> tuple[Segmenter, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (strict).

    ``expect`` (optional) holds fields the caller needs, e.g. ``{"num_classes": 21}``; a
    checkpoint that disagrees is an error naming the file and both values. ``trust``: the
    factories a user-model checkpoint may name (``Trust()``: none).
    """
    ckpt = load_checkpoint(path)
    spec = spec_of(ckpt["model_spec"])
    for key, want in (expect or {}).items():
        if spec.fields.get(key) != want:
            raise DdcatError(f"checkpoint {path} has {key}={show(spec.fields.get(key))}, expected {want!r}")
    spec.check_trusted(trust, path)
    spec.check_state(ckpt["model"], path)
    model = spec.build()
    load_state(model, ckpt["model"], path)
    return model, ckpt


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch is a one-line error naming the file."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DdcatError(f"checkpoint {path} does not match its model spec: {first_line(exc)}") from None


def export_main_branch(src: str | Path, dst: str | Path, trust: Trust = Trust()) -> dict[str, Any]:
    """Write the main branch alone (``ddc=False``) from any ddcat checkpoint: a ddcat checkpoint of
    the plain model, or a user model's own state dict (see the spec kinds' ``export``)."""
    ckpt = load_checkpoint(src)
    spec = spec_of(ckpt["model_spec"])
    spec.check_trusted(trust, src)
    return spec.export(ckpt, src, dst)


def export_note(written: dict[str, Any]) -> str:
    """What :func:`export_main_branch` wrote (its return value), in words."""
    fields = written["model_spec"] if "model_spec" in written else {"factory": written["factory"]}  # a bare state dict
    return spec_of(fields).export_note()


def checkpoint_from_config(cfg: dict[str, Any], path: str | Path) -> Path:
    """Write the model ``cfg`` describes (initial weights: model.weights / model.pretrained) as a
    ddcat checkpoint, so that ``ddcat eval --config`` evaluates a model it did not train. The
    config is the caller's own: its model.factory runs."""
    spec = config_spec(cfg, ddc=False)
    torch.manual_seed(cfg["seed"])  # layers model.weights does not set: the same on every rank and run
    model = spec.build(pretrained=initial_weights(cfg))
    atomic_save({"format": FORMAT, "version": VERSION, "model_spec": spec.fields, "model": model.state_dict(), "config": cfg}, path)
    return Path(path)


def resume_checkpoint(out: Path, resume: str | Path | bool, iters: int) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``--resume`` continues from, checked (training state and generator states
    included); ``last.prev.pt`` when ``last.pt`` is missing, and named when ``last.pt`` is unreadable."""
    path = resume_path(out, resume)
    try:
        ckpt = load_checkpoint(path)
    except DdcatError as exc:
        raise intact_predecessor(path, exc) from None
    check_training_state(ckpt, path, iters)
    return path, ckpt
