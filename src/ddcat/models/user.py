"""The user's own network from a config: ``model.factory`` + ``model.kwargs`` (+ ``model.weights``).

A *user model spec* (recorded in checkpoints as ``model_spec``, so ``ddcat eval --checkpoint``
rebuilds the network without the config)::

    {"factory": "package.module:function", "kwargs": {...}, "num_classes": K, "ddc": bool,
     "ddc_head": "decode_head.classifier" | None, "normalize": None | "imagenet" | {mean, std}}

``function(**kwargs)`` must return an ``nn.Module``; it is wrapped by :func:`ddcat.models.adapt`.
Every mistake (unimportable factory, factory failing, weights that do not fit, a head path that
does not exist) is a one-line :class:`DdcatError` naming the key and value.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ddcat.errors import DdcatError
from ddcat.models.adapter import AdaptedModel, adapt


def is_user_spec(spec: dict[str, Any]) -> bool:
    return bool(spec.get("factory"))


# ----------------------------------------------------------------------------- trust
# Rebuilding a user model runs the factory a spec names: a checkpoint naming "subprocess:run" with
# kwargs {"args": [...]} would run a command. So a factory is run only when it came from the user:
# a config this process trains or evaluates (trust() is called there), or a checkpoint the user
# vouches for with --trust-factory (trust_all()).
_TRUSTED: set[str] = set()
_trust_all = False


def trust(factory: str | None) -> None:
    """Mark a factory named by a config the user gave as safe to run in this process."""
    if factory:
        _TRUSTED.add(str(factory))


def trust_all(on: bool = True) -> None:
    """``--trust-factory``: run the factories the checkpoints of this command name (the command
    line sets it for each command, on or off)."""
    global _trust_all
    _trust_all = bool(on)


def check_trusted(factory: str, source: str | Path) -> None:
    if not (_trust_all or factory in _TRUSTED):
        raise DdcatError(
            f"checkpoint {source} names model.factory '{factory}', code that ddcat would run to rebuild the model; "
            "pass --trust-factory if you trust this checkpoint, or evaluate with --config naming that factory"
        )


def check_user_spec(spec: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """A user model spec read from a checkpoint, field by field (nothing is imported)."""
    where = f"checkpoint {source}: 'model_spec"
    if not isinstance(spec.get("factory"), str):
        raise DdcatError(f"{where}.factory' must be a string")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise DdcatError(f"{where}.kwargs' must be a mapping")
    k = spec.get("num_classes")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 255:
        raise DdcatError(f"{where}.num_classes' must be an integer in [2, 255]")
    if not isinstance(spec.get("ddc"), bool):
        raise DdcatError(f"{where}.ddc' must be true or false")
    if spec.get("ddc_head") is not None and not isinstance(spec["ddc_head"], str):
        raise DdcatError(f"{where}.ddc_head' must be a dotted module path or null")
    if spec.get("normalize") is not None and not isinstance(spec["normalize"], (str, dict, list)):
        raise DdcatError(f"{where}.normalize' must be null, 'imagenet' or a mean/std mapping")
    return dict(spec)


def import_factory(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (the current directory is importable too)."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise DdcatError(f"model.factory must look like 'package.module:function', got '{path}'")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError or an error raised while importing the user's module
        raise DdcatError(f"model.factory '{path}': cannot import module '{module_name}' ({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    node: Any = module
    for part in attr.split("."):
        if not hasattr(node, part):
            raise DdcatError(f"model.factory '{path}': module '{module_name}' has no attribute '{attr}'")
        node = getattr(node, part)
    if not callable(node):
        raise DdcatError(f"model.factory '{path}' is a {type(node).__name__}, not a callable")
    return node


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise DdcatError(f"model.weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, foreign pickle
        raise DdcatError(f"model.weights {path} cannot be read as a state dict ({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DdcatError(f"model.weights {path} is not a state dict (a mapping of names to tensors)")
    return state


def load_weights(model: nn.Module, path: str | Path, factory: str) -> None:
    state = read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DdcatError(f"model.weights {path} does not fit model.factory '{factory}': {_first_line(exc)}") from None


def spec_of(model_cfg: dict[str, Any], num_classes: int, ddc: bool) -> dict[str, Any]:
    """The user model spec of a config's ``model`` section."""
    if ddc and not model_cfg.get("ddc_head"):
        raise DdcatError(
            f"DDC-AT on model.factory '{model_cfg['factory']}' needs model.ddc_head: the dotted path of the module "
            "that produces the class logits (e.g. decode_head.classifier)"
        )
    return {
        "factory": model_cfg["factory"],
        "kwargs": dict(model_cfg.get("kwargs") or {}),
        "num_classes": num_classes,
        "ddc": ddc,
        "ddc_head": model_cfg.get("ddc_head") if ddc else None,
        "normalize": model_cfg.get("normalize"),
    }


def build_user_model(spec: dict[str, Any], weights: str | Path | None = None) -> AdaptedModel:
    """factory(**kwargs), then ``weights`` (if any), then :func:`adapt` (f_a / f_m copy the loaded head)."""
    factory = spec["factory"]
    fn = import_factory(factory)
    kwargs = spec.get("kwargs") or {}
    try:
        net = fn(**kwargs)
    except DdcatError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code failed: one line naming it
        raise DdcatError(f"model.factory '{factory}' failed with model.kwargs {kwargs}: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise DdcatError(f"model.factory '{factory}' returned a {type(net).__name__}, not an nn.Module")
    if weights:
        load_weights(net, weights, factory)
    return adapt(net, normalize=spec.get("normalize"), num_classes=spec["num_classes"], ddc_head=spec.get("ddc_head") if spec["ddc"] else None)


def user_state_dict(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The user's own network's state dict from an adapted model's (drops f_a / f_m, strips ``model.``)."""
    return {k[len("model.") :]: v for k, v in model_state.items() if k.startswith("model.")}
