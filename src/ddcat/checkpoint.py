"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict::

    {"format": "ddcat", "version": 1,
     "model_spec": {"arch", "backbone", "num_classes", "ddc", "options"},
     "model": state_dict, "config": {...}, ... training state for ``last.pt`` ...}

Writing goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
the target, so a crash never leaves a truncated ``last.pt`` behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ddcat.errors import DdcatError
from ddcat.models import DDC_HEADS, Segmenter, build_model
from ddcat.models.segmenter import MODEL_OPTIONS

FORMAT = "ddcat"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def spec_from_config(cfg: dict[str, Any], ddc: bool) -> dict[str, Any]:
    m = cfg["model"]
    return {
        "arch": m["arch"],
        "backbone": m["backbone"],
        "num_classes": cfg["data"]["num_classes"],
        "ddc": ddc,
        "options": {k: m[k] for k in MODEL_OPTIONS},
    }


def build_from_spec(spec: dict[str, Any], pretrained: str | None = None) -> Segmenter:
    options = dict(spec["options"])
    if pretrained:
        options["pretrained"] = pretrained
    return build_model(spec["arch"], spec["backbone"], spec["num_classes"], ddc=spec["ddc"], **options)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ddcat checkpoint safely; every failure is a one-line DdcatError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DdcatError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt / foreign pickle
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise DdcatError(f"checkpoint {path} is corrupt or not a ddcat checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt or "model_spec" not in ckpt:
        raise DdcatError(f"checkpoint {path} is not a ddcat checkpoint (missing 'format'/'model'/'model_spec')")
    return ckpt


def load_model(path: str | Path, expect: dict[str, Any] | None = None) -> tuple[Segmenter, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (strict).

    ``expect`` (optional) holds fields the caller needs, e.g. ``{"num_classes": 21}``; a
    checkpoint that disagrees is an error naming the file and both values.
    """
    ckpt = load_checkpoint(path)
    spec = ckpt["model_spec"]
    for key, want in (expect or {}).items():
        if spec.get(key) != want:
            raise DdcatError(f"checkpoint {path} has {key}={spec.get(key)!r}, expected {want!r}")
    model = build_from_spec(spec)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DdcatError(f"checkpoint {path} does not match its model spec: {first}") from None
    return model, ckpt


def main_branch_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDC-AT's auxiliary and mask heads: what remains loads into the plain model."""
    drop = tuple(f"heads.{h}." for h in DDC_HEADS)
    return {k: v for k, v in state.items() if not k.startswith(drop)}


def export_main_branch(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write a checkpoint of the main branch alone (``ddc=False``) from any ddcat checkpoint."""
    ckpt = load_checkpoint(src)
    spec = dict(ckpt["model_spec"], ddc=False)
    out = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": spec,
        "model": main_branch_state(ckpt["model"]),
        "config": ckpt.get("config", {}),
        "exported_from": str(src),
    }
    model = build_from_spec(spec)
    model.load_state_dict(out["model"], strict=True)  # proves it loads before anything is written
    atomic_save(out, dst)
    return out
