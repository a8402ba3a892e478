"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict::

    {"format": "ddcat", "version": 1,
     "model_spec": {"arch", "backbone", "num_classes", "ddc", "options"},
     "model": state_dict, "config": {...}, ... training state for ``last.pt`` ...}

Writing goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
the target, so a crash never leaves a truncated ``last.pt`` behind; a full disk is a one-line
error. Reading is ``weights_only=True``, then every field is checked before anything is built:
the model spec with the same rules as a config (so a crafted spec cannot ask for a huge model),
and the state dict's shapes against a skeleton of the spec built on the ``meta`` device.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import shutil
import signal
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from ddcat.config import check_value
from ddcat.errors import DdcatError, show
from ddcat.models import DDC_EXTRA_HEADS, Segmenter, build_model
from ddcat.models import user as user_models
from ddcat.models.segmenter import MODEL_OPTIONS
from ddcat.models.state import first_mismatch

FORMAT = "ddcat"
VERSION = 1


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


def spec_from_config(cfg: dict[str, Any], ddc: bool) -> dict[str, Any]:
    m = cfg["model"]
    if m.get("factory"):  # the user's own network (models/user.py)
        return user_models.spec_of(m, cfg["data"]["num_classes"], ddc)
    return {
        "arch": m["arch"],
        "backbone": m["backbone"],
        "num_classes": cfg["data"]["num_classes"],
        "ddc": ddc,
        "options": {k: m[k] for k in MODEL_OPTIONS},
    }


def initial_weights(cfg: dict[str, Any]) -> str | None:
    """The file a fresh training run starts from: model.weights for a user model, else model.pretrained."""
    m = cfg["model"]
    return m.get("weights") if m.get("factory") else m["pretrained"]


def build_from_spec(spec: dict[str, Any], pretrained: str | None = None) -> Segmenter:
    """ddcat's own model, or the user's wrapped in the adapter; ``pretrained`` = the initial weights file."""
    if user_models.is_user_spec(spec):
        return user_models.build_user_model(spec, weights=pretrained)
    options = dict(spec["options"])
    if pretrained:
        options["pretrained"] = pretrained
    return build_model(spec["arch"], spec["backbone"], spec["num_classes"], ddc=spec["ddc"], **options)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ddcat checkpoint safely; every failure is a one-line DdcatError naming the file.

    The fields every checkpoint has are checked here: ``model_spec`` (with the config's rules)
    and ``model`` (a state dict of tensors). Training fields are checked by :func:`check_resumable`.
    """
    path = Path(path)
    if path.is_dir():
        raise DdcatError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise DdcatError(f"checkpoint not found: {path}")
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
        raise DdcatError(f"checkpoint {path} is corrupt or not a ddcat checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt / foreign file
        raise DdcatError(f"checkpoint {path} is corrupt or not a ddcat checkpoint ({_first_line(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt or "model_spec" not in ckpt:
        raise DdcatError(f"checkpoint {path} is not a ddcat checkpoint (missing 'format'/'model'/'model_spec')")
    ckpt["model_spec"] = check_spec(ckpt["model_spec"], path)
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DdcatError(f"checkpoint {path}: 'model' must be a state dict (names -> tensors), got {type(state).__name__}")
    return ckpt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return show(text.splitlines()[0])[1:-1] if text else type(exc).__name__


#: model_spec field -> the config key whose rules it follows.
SPEC_KEYS = {"arch": "model.arch", "backbone": "model.backbone", "num_classes": "data.num_classes"}


def check_spec(spec: Any, path: str | Path) -> dict[str, Any]:
    """A checkpoint's model spec, checked with the same rules as a config (one-line errors)."""
    where = f" in checkpoint {path} (model_spec)"
    if not isinstance(spec, dict):
        raise DdcatError(f"checkpoint {path}: 'model_spec' must be a mapping, got {type(spec).__name__}")
    if user_models.is_user_spec(spec):
        return user_models.check_user_spec(spec, path)
    missing = [k for k in (*SPEC_KEYS, "ddc", "options") if k not in spec]
    if missing:
        raise DdcatError(f"checkpoint {path}: 'model_spec' lacks {', '.join(missing)}")
    out = dict(spec)
    for field, key in SPEC_KEYS.items():
        out[field] = check_value(key, spec[field], where)
    if not isinstance(spec["ddc"], bool):
        raise DdcatError(f"checkpoint {path}: 'model_spec.ddc' must be true or false, got {show(spec['ddc'])}")
    options = spec["options"]
    if not isinstance(options, dict):
        raise DdcatError(f"checkpoint {path}: 'model_spec.options' must be a mapping, got {type(options).__name__}")
    known = set(MODEL_OPTIONS)
    unknown = [show(k) for k in options if k not in known]
    if unknown:
        raise DdcatError(f"checkpoint {path}: unknown model option(s) {', '.join(unknown)} in 'model_spec.options'")
    out["options"] = {k: check_value(f"model.{k}", v, where) for k, v in options.items()}
    return out


def check_state_shapes(state: dict[str, torch.Tensor], spec: dict[str, Any], path: str | Path) -> None:
    """Compare a state dict with the spec's model, built on the ``meta`` device (no memory):
    a missing or unexpected key, or a shape mismatch, is an error naming the first one. A user
    model's spec is not checked here (its skeleton would run the user's factory an extra time):
    :func:`load_state`'s strict load names its mismatch."""
    if user_models.is_user_spec(spec):
        return
    with torch.device("meta"):
        skeleton = build_from_spec(spec).state_dict()
    mismatch = first_mismatch(state, skeleton)
    if mismatch is not None:
        key, have, want = mismatch
        if have is None:
            raise DdcatError(f"checkpoint {path} does not match its model spec: missing weight {key!r}")
        raise DdcatError(f"checkpoint {path} does not match its model spec: {key!r} has shape {have}, the model needs {want}")
    extra = [k for k in state if k not in skeleton]
    if extra:
        raise DdcatError(f"checkpoint {path} does not match its model spec: unexpected weight {show(extra[0])}")


def load_model(path: str | Path, expect: dict[str, Any] | None = None) -> tuple[Segmenter, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (strict).

    ``expect`` (optional) holds fields the caller needs, e.g. ``{"num_classes": 21}``; a
    checkpoint that disagrees is an error naming the file and both values.
    """
    ckpt = load_checkpoint(path)
    spec = ckpt["model_spec"]
    for key, want in (expect or {}).items():
        if spec.get(key) != want:
            raise DdcatError(f"checkpoint {path} has {key}={show(spec.get(key))}, expected {want!r}")
    if user_models.is_user_spec(spec):
        user_models.check_trusted(spec["factory"], path)
    check_state_shapes(ckpt["model"], spec, path)
    model = build_from_spec(spec)
    load_state(model, ckpt["model"], path)
    return model, ckpt


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch is a one-line error naming the file."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DdcatError(f"checkpoint {path} does not match its model spec: {_first_line(exc)}") from None


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


def main_branch_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDC-AT's auxiliary and mask heads: what remains loads into the plain model."""
    drop = tuple(f"heads.{h}." for h in DDC_EXTRA_HEADS)
    return {k: v for k, v in state.items() if not k.startswith(drop)}


def export_main_branch(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write a checkpoint of the main branch alone (``ddc=False``) from any ddcat checkpoint."""
    ckpt = load_checkpoint(src)
    if user_models.is_user_spec(ckpt["model_spec"]):
        user_models.check_trusted(ckpt["model_spec"]["factory"], src)
        return export_user_model(ckpt, src, dst)
    spec = dict(ckpt["model_spec"], ddc=False)
    out = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": spec,
        "model": main_branch_state(ckpt["model"]),
        "config": ckpt.get("config", {}),
        "exported_from": str(src),
    }
    check_state_shapes(out["model"], spec, src)  # proves it loads before anything is written
    atomic_save(out, dst)
    return out


def export_user_model(ckpt: dict[str, Any], src: str | Path, dst: str | Path) -> dict[str, Any]:
    """A user model's checkpoint -> the user's own network's state dict (f_a / f_m dropped), as
    ``.safetensors`` or a ``torch.save`` file by ``dst``'s suffix; it loads with the user's class
    (``SegformerForSemanticSegmentation(config).load_state_dict(...)``) and as ``model.weights``."""
    spec = dict(ckpt["model_spec"], ddc=False, ddc_head=None)
    state = user_models.user_state_dict(ckpt["model"])
    model = build_from_spec(spec)
    try:
        model.user_model().load_state_dict(state, strict=True)  # proves it loads before anything is written
    except RuntimeError as exc:
        raise DdcatError(f"checkpoint {src} does not match its model spec: {str(exc).splitlines()[0]}") from None
    dst = Path(dst)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file

        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        os.replace(tmp, dst)
    else:
        atomic_save(state, dst)
    return {"format": "state_dict", "factory": spec["factory"], "model": state}


def checkpoint_from_config(cfg: dict[str, Any], path: str | Path) -> Path:
    """Write the model ``cfg`` describes (initial weights: model.weights / model.pretrained) as a
    ddcat checkpoint, so that ``ddcat eval --config`` evaluates a model it did not train."""
    spec = spec_from_config(cfg, ddc=False)
    user_models.trust(cfg["model"].get("factory"))  # the user's own config
    torch.manual_seed(cfg["seed"])  # layers model.weights does not set: the same on every rank and run
    model = build_from_spec(spec, pretrained=initial_weights(cfg))
    atomic_save({"format": FORMAT, "version": VERSION, "model_spec": spec, "model": model.state_dict(), "config": cfg}, path)
    return Path(path)
