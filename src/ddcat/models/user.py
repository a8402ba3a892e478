"""The user's own network from a config: ``model.factory`` + ``model.kwargs`` (+ ``model.weights``).

``function(**kwargs)`` must return an ``nn.Module``; it is wrapped by :func:`ddcat.models.adapt`.
Every mistake (unimportable factory, factory failing, weights that do not fit, a head path that
does not exist) is a one-line :class:`DdcatError` naming the key and value. A checkpoint records
such a model as a *user model spec* (``ddcat.checkpoint.spec.UserModelSpec``), so ``ddcat eval
--checkpoint`` rebuilds the network without the config; :class:`Trust` says whether its factory may run.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ddcat.errors import DdcatError
from ddcat.models.adapter import AdaptedModel, adapt


# ----------------------------------------------------------------------------- trust
@dataclass(frozen=True)
class Trust:
    """Who vouches for the code a user-model checkpoint names.

    Rebuilding a user model runs the factory its spec names: a checkpoint naming "subprocess:run"
    with kwargs {"args": [...]} would run a command. So a factory read from a checkpoint runs only
    when the caller trusts it: ``factories`` are named by a config the user gave this command (its
    own code), ``everything`` is ``--trust-factory`` (the user vouches for the checkpoints of this
    command). The command line decides; the layers below pass the value on. ``Trust()`` trusts nothing.
    """

    factories: frozenset[str] = frozenset()
    everything: bool = False

    def with_configs(self, *cfgs: dict[str, Any]) -> "Trust":
        """This trust and the ``model.factory`` each config names (configs the user gave)."""
        named = {str(c["model"]["factory"]) for c in cfgs if c["model"].get("factory")}
        return replace(self, factories=self.factories | named)

    def allows(self, factory: str) -> bool:
        return self.everything or factory in self.factories

    def check(self, factory: str, source: str | Path) -> None:
        """A one-line error unless ``factory`` (named by checkpoint ``source``) may run."""
        if not self.allows(factory):
            raise DdcatError(
                f"checkpoint {source} names model.factory '{factory}', code that ddcat would run to rebuild the model; "
                "pass --trust-factory if you trust this checkpoint, or evaluate with --config naming that factory"
            )


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
