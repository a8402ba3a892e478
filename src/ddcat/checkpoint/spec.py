"""The kinds of model a checkpoint holds, one class each: what its ``model_spec`` says and how to
build, check, export and describe that model.

* :class:`OwnModelSpec`: ddcat's own networks (``ddcat train`` of ``model.arch``, and ``ddcat
  convert``'s output, whose layout is translated to ddcat's names before it is written)::

      {"arch", "backbone", "num_classes", "ddc", "options": {MODEL_OPTIONS}}

* :class:`UserModelSpec`: the user's network from ``model.factory`` (:mod:`ddcat.models.user`)::

      {"factory": "package.module:function", "kwargs": {...}, "num_classes": K, "ddc": bool,
       "ddc_head": "decode_head.classifier" | None, "normalize": None | "imagenet" | {mean, std}}

A spec read from a checkpoint is checked field by field with the config's rules before anything is
built (so a crafted spec cannot ask for a huge model or name a module ddcat would import), and a
factory it names runs only where the caller's :class:`~ddcat.models.user.Trust` allows it.
``_kind`` is the one place that tells the kinds apart (:func:`spec_of`, :func:`read_spec`,
:func:`config_spec` and :func:`initial_weights` go through it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ddcat.checkpoint.io import FORMAT, VERSION, atomic_save, save_state_dict
from ddcat.config import check_value
from ddcat.errors import DdcatError, show
from ddcat.models import DDC_EXTRA_HEADS, build_model
from ddcat.models.segmenter import MODEL_OPTIONS
from ddcat.models.state import mismatch_message
from ddcat.models.user import Trust, build_user_model, user_state_dict


class ModelSpec:
    """One checkpoint's model: ``fields`` is the ``model_spec`` dict the checkpoint stores."""

    #: whether DDP must look for parameters a forward leaves unused
    unused_parameters: ClassVar[bool] = False

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fields!r})"

    @classmethod
    def from_config(cls, cfg: dict[str, Any], ddc: bool) -> ModelSpec:
        raise NotImplementedError

    @staticmethod
    def initial_weights(cfg: dict[str, Any]) -> str | None:
        """The file a fresh training run of ``cfg`` starts from."""
        raise NotImplementedError

    @classmethod
    def check(cls, spec: dict[str, Any], path: str | Path) -> ModelSpec:
        """The spec a checkpoint holds, checked (one-line errors naming ``path``)."""
        raise NotImplementedError

    def check_trusted(self, trust: Trust, path: str | Path) -> None:
        """Refuse to build a model whose code the caller does not vouch for; ddcat's own models run ddcat's code."""

    def build(self, pretrained: str | None = None) -> torch.nn.Module:
        """The model (``pretrained``: the initial weights file)."""
        raise NotImplementedError

    def check_state(self, state: dict[str, torch.Tensor], path: str | Path) -> None:
        """A one-line error naming the first weight of ``state`` that does not fit, before anything is built."""

    def export(self, ckpt: dict[str, Any], src: str | Path, dst: str | Path) -> dict[str, Any]:
        """Write the main branch alone (DDC-AT's f_a and f_m dropped) to ``dst``; returns what was written."""
        raise NotImplementedError

    def export_note(self) -> str:
        """What :meth:`export` wrote, in words."""
        raise NotImplementedError

    def describe(self) -> str:
        """The model in a few words."""
        raise NotImplementedError


def main_branch_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDC-AT's auxiliary and mask heads: what remains loads into the plain model."""
    drop = tuple(f"heads.{h}." for h in DDC_EXTRA_HEADS)
    return {k: v for k, v in state.items() if not k.startswith(drop)}


def _heads(ddc: bool) -> str:
    return " with DDC-AT's f_a and f_m" if ddc else ""


class OwnModelSpec(ModelSpec):
    """ddcat's own PSPNet / DeepLabv3 on a ResNet trunk (``models/segmenter.py``)."""

    #: model_spec field -> the config key whose rules it follows.
    SPEC_KEYS: ClassVar[dict[str, str]] = {"arch": "model.arch", "backbone": "model.backbone", "num_classes": "data.num_classes"}
    #: the fields a checkpoint of this kind must have
    REQUIRED: ClassVar[tuple[str, ...]] = (*SPEC_KEYS, "ddc", "options")

    @classmethod
    def from_config(cls, cfg: dict[str, Any], ddc: bool) -> OwnModelSpec:
        m = cfg["model"]
        return cls({
            "arch": m["arch"],
            "backbone": m["backbone"],
            "num_classes": cfg["data"]["num_classes"],
            "ddc": ddc,
            "options": {k: m[k] for k in MODEL_OPTIONS},
        })

    @staticmethod
    def initial_weights(cfg: dict[str, Any]) -> str | None:
        return cfg["model"]["pretrained"]

    @classmethod
    def check(cls, spec: dict[str, Any], path: str | Path) -> OwnModelSpec:
        where = f" in checkpoint {path} (model_spec)"
        missing = [k for k in cls.REQUIRED if k not in spec]
        if missing:
            raise DdcatError(f"checkpoint {path}: 'model_spec' lacks {', '.join(missing)}")
        out = dict(spec)
        for field, key in cls.SPEC_KEYS.items():
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
        return cls(out)

    def build(self, pretrained: str | None = None) -> torch.nn.Module:
        f = self.fields
        options = dict(f["options"])
        if pretrained:
            options["pretrained"] = pretrained
        return build_model(f["arch"], f["backbone"], f["num_classes"], ddc=f["ddc"], **options)

    def skeleton(self) -> dict[str, torch.Tensor]:
        """The model's state dict built on the ``meta`` device (shapes, no memory)."""
        with torch.device("meta"):
            return self.build().state_dict()

    def check_state(self, state: dict[str, torch.Tensor], path: str | Path) -> None:
        """Compare ``state`` with the model's skeleton: a missing or unexpected key, or a shape
        mismatch, is an error naming the first one."""
        skeleton = self.skeleton()
        problem = mismatch_message(state, skeleton, missing="missing weight {key!r}", shape="{key!r} has shape {have}, the model needs {want}")
        if problem is None:
            extra = [k for k in state if k not in skeleton]
            problem = f"unexpected weight {show(extra[0])}" if extra else None
        if problem is not None:
            raise DdcatError(f"checkpoint {path} does not match its model spec: {problem}")

    def export(self, ckpt: dict[str, Any], src: str | Path, dst: str | Path) -> dict[str, Any]:
        """A ddcat checkpoint of the plain model (``ddc=False``): it loads wherever the model does."""
        spec = OwnModelSpec(dict(self.fields, ddc=False))
        out = {
            "format": FORMAT,
            "version": VERSION,
            "model_spec": spec.fields,
            "model": main_branch_state(ckpt["model"]),
            "config": ckpt.get("config", {}),
            "exported_from": str(src),
        }
        spec.check_state(out["model"], src)  # proves it loads before anything is written
        atomic_save(out, dst)
        return out

    def export_note(self) -> str:
        return "main branch only, loads into the plain model"

    def describe(self) -> str:
        f = self.fields
        return f"{f['arch']} {f['backbone']}, {f['num_classes']} classes{_heads(f['ddc'])}"


class UserModelSpec(ModelSpec):
    """The user's network (``model.factory``) wrapped by :func:`ddcat.models.adapt`."""

    unused_parameters = True  # e.g. an auxiliary head that only runs when labels are passed

    @classmethod
    def from_config(cls, cfg: dict[str, Any], ddc: bool) -> UserModelSpec:
        m = cfg["model"]
        if ddc and not m.get("ddc_head"):
            raise DdcatError(
                f"DDC-AT on model.factory '{m['factory']}' needs model.ddc_head: the dotted path of the module "
                "that produces the class logits (e.g. decode_head.classifier)"
            )
        return cls({
            "factory": m["factory"],
            "kwargs": dict(m.get("kwargs") or {}),
            "num_classes": cfg["data"]["num_classes"],
            "ddc": ddc,
            "ddc_head": m.get("ddc_head") if ddc else None,
            "normalize": m.get("normalize"),
        })

    @staticmethod
    def initial_weights(cfg: dict[str, Any]) -> str | None:
        return cfg["model"].get("weights")

    @classmethod
    def check(cls, spec: dict[str, Any], path: str | Path) -> UserModelSpec:
        """Field by field; nothing is imported."""
        where = f"checkpoint {path}: 'model_spec"
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
        return cls(dict(spec))

    def check_trusted(self, trust: Trust, path: str | Path) -> None:
        trust.check(self.fields["factory"], path)

    def build(self, pretrained: str | None = None) -> torch.nn.Module:
        return build_user_model(self.fields, weights=pretrained)

    # check_state: not here (a skeleton would run the user's factory an extra time); the strict
    # load of load_state names the mismatch.

    def export(self, ckpt: dict[str, Any], src: str | Path, dst: str | Path) -> dict[str, Any]:
        """The user's own network's state dict (f_a / f_m dropped), as ``.safetensors`` or a
        ``torch.save`` file by ``dst``'s suffix; it loads with the user's class
        (``SegformerForSemanticSegmentation(config).load_state_dict(...)``) and as ``model.weights``."""
        spec = UserModelSpec(dict(self.fields, ddc=False, ddc_head=None))
        state = user_state_dict(ckpt["model"])
        model = spec.build()
        try:
            model.user_model().load_state_dict(state, strict=True)  # proves it loads before anything is written
        except RuntimeError as exc:
            raise DdcatError(f"checkpoint {src} does not match its model spec: {str(exc).splitlines()[0]}") from None
        save_state_dict(state, dst)
        return {"format": "state_dict", "factory": spec.fields["factory"], "model": state}

    def export_note(self) -> str:
        return f"state dict of {self.fields['factory']}'s model, without DDC-AT's heads"

    def describe(self) -> str:
        f = self.fields
        return f"model.factory '{f['factory']}', {f['num_classes']} classes{_heads(f['ddc'])}"


def _kind(factory: Any) -> type[ModelSpec]:
    """The one place the kinds are told apart: a spec or config naming ``model.factory`` is the user's."""
    return UserModelSpec if factory else OwnModelSpec


def spec_of(fields: dict[str, Any] | ModelSpec) -> ModelSpec:
    """The spec object of a ``model_spec`` dict that is already checked (or written by ddcat)."""
    return fields if isinstance(fields, ModelSpec) else _kind(fields.get("factory"))(fields)


def read_spec(spec: Any, path: str | Path) -> ModelSpec:
    """A checkpoint's ``model_spec``, checked by its kind (one-line errors naming ``path``)."""
    if not isinstance(spec, dict):
        raise DdcatError(f"checkpoint {path}: 'model_spec' must be a mapping, got {type(spec).__name__}")
    return _kind(spec.get("factory")).check(spec, path)


def config_spec(cfg: dict[str, Any], ddc: bool) -> ModelSpec:
    """The spec of the model ``cfg`` describes (``ddc``: with DDC-AT's heads)."""
    return _kind(cfg["model"].get("factory")).from_config(cfg, ddc)


def initial_weights(cfg: dict[str, Any]) -> str | None:
    """The file a fresh training run starts from: model.weights for a user model, else model.pretrained."""
    return _kind(cfg["model"].get("factory")).initial_weights(cfg)


# ----------------------------------------------------------------------------- on model_spec dicts
# (what checkpoints store; the names ddcat.checkpoint has always had)


def spec_from_config(cfg: dict[str, Any], ddc: bool) -> dict[str, Any]:
    """The ``model_spec`` dict of the model ``cfg`` describes."""
    return config_spec(cfg, ddc).fields


def check_spec(spec: Any, path: str | Path) -> dict[str, Any]:
    """A checkpoint's model spec, checked with the same rules as a config (one-line errors)."""
    return read_spec(spec, path).fields


def build_from_spec(spec: dict[str, Any], pretrained: str | None = None) -> torch.nn.Module:
    """ddcat's own model, or the user's wrapped in the adapter; ``pretrained`` = the initial weights file."""
    return spec_of(spec).build(pretrained)


def check_state_shapes(state: dict[str, torch.Tensor], spec: dict[str, Any], path: str | Path) -> None:
    """:meth:`ModelSpec.check_state` of ``spec``'s kind (ddcat's own models: shapes on the ``meta`` device)."""
    spec_of(spec).check_state(state, path)
