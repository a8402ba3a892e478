"""Run configuration: defaults, YAML files and ``--set key=value`` overrides.

A configuration is a nested dict with the sections below. Every key a file or an override names
must exist in :data:`DEFAULTS` and have the default's type (ints are accepted where a float is
expected, ``null`` where the default is ``None``); anything else is a :class:`DdcatError` that
lists the valid keys.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ddcat.errors import DdcatError

# ``None`` defaults accept a value of any of the listed types (see _NULLABLE).
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "protocol": "default",  # default | paper: the paper code's evaluation, augmentation and trunk (PRESETS)
    "model": {
        "arch": "pspnet",  # pspnet | deeplabv3
        "backbone": "resnet18",  # resnet18 | resnet50 | resnet101
        "width": 64,  # channels of the first ResNet stage (64 = standard, torchvision-compatible)
        "deep_stem": False,  # three 3x3 stem convs as in the paper's code
        "output_stride": 8,  # 8 or 16
        "head_channels": 0,  # 0 = derive from the trunk (512 for PSPNet, 256 for DeepLabv3 at width 64)
        "dropout": 0.1,
        "pretrained": None,  # path to a torchvision-style ResNet state dict
        # --- the paper code's trunk and heads (docs/protocol.md); defaults = ddcat's historical model
        "dilation": "torchvision",  # torchvision (first block of a dilated stage keeps the previous rate) | paper (every block)
        "stem_width": 0,  # deep stem widths s, s, 2s (0 = width // 2; the paper's code: 64)
        "align_corners": False,  # bilinear upsampling convention (the paper's code: true)
        "deep_sup_kernel": 3,  # kernel of the deep-supervision head's first conv (the paper's DeepLabv3: 1)
    },
    "data": {
        "name": "synthetic",  # synthetic | voc | cityscapes | list
        "root": None,  # data root for list-file datasets
        "num_classes": 6,
        "train_list": None,  # list files, relative to root (defaults per dataset)
        "val_list": None,
        "seed": 0,  # content of the synthetic dataset (fixed across runs; the run seed drives augmentation)
        "image_size": 64,  # synthetic images are image_size x image_size
        "num_train": 512,
        "num_val": 64,
        "scale_min": 0.5,
        "scale_max": 2.0,
        "rotate": 10.0,  # degrees, +-
        "blur": True,
        "flip": True,
        "workers": 0,
        "fill": "zero",  # zero | mean: colour of the pixels rotation and crop padding uncover (the paper's code: mean)
        "rotate_prob": 1.0,  # probability of rotating a training sample (the paper's code: 0.5)
    },
    "train": {
        "method": "clean",  # clean | sat | ddcat | ddcat-m | ddcat-n
        "iters": 300,
        "batch_size": 8,  # global batch, over all processes
        "accum_steps": 1,  # micro-batches per process and iteration (gradient accumulation)
        "crop_size": 64,
        "optimizer": "sgd",  # sgd (the paper's) | adamw
        "lr": 0.01,
        "head_lr_mult": 10.0,
        "momentum": 0.9,
        "weight_decay": 1.0e-4,
        "poly_power": 0.9,
        "deep_sup_weight": 0.4,
        "adv_fraction": 0.5,
        "lambda_main": 1.0,
        "lambda_aux": 1.0,
        "lambda_mask": 1.0,
        "mask_ignore": True,  # ignore label-255 pixels in the mask loss (the paper's code counts them)
        "save_every": 100,
        "log_every": 1,
        "amp": "off",  # off | bf16 | fp16
        "channels_last": False,
        "compile": False,
    },
    "attack": {  # the attack used during adversarial training
        "name": "bim",  # bim | pgd | segpgd
        "eps": 0.03,
        "alpha": 0.01,
        "steps": 3,
    },
    "eval": {
        "mode": "whole",  # whole | slide
        "crop_size": 0,  # sliding-window size (0 = train.crop_size)
        "stride_rate": 0.6667,
        "batch_size": 8,
        "max_images": 0,  # 0 = all
        # --- the paper code's test-time protocol (docs/protocol.md); every option is differentiable
        "flip": False,  # average in the horizontally flipped input's prediction
        "base_size": 0,  # resize the image so that its long side is base_size first (0 = off)
        "score_at": "input",  # input (prediction resized back, original labels) | base (labels resized to the base size)
        "pad": "zero",  # zero (bottom/right) | mean (centred, mean colour): images smaller than a window
        "average": "logits",  # logits | softmax: what overlapping windows and flips average
        "attack_per_crop": False,  # attack each window on its own, as the paper's code (weaker than whole-image)
    },
}

# Keys whose default is None: the types they accept.
_NULLABLE: dict[str, tuple[type, ...]] = {
    "model.pretrained": (str,),
    "data.root": (str,),
    "data.train_list": (str,),
    "data.val_list": (str,),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": ("pspnet", "deeplabv3"),
    "model.backbone": ("resnet18", "resnet50", "resnet101"),
    "data.name": ("synthetic", "voc", "cityscapes", "list"),
    "train.method": ("clean", "sat", "ddcat", "ddcat-m", "ddcat-n"),
    "train.amp": ("off", "bf16", "fp16"),
    "train.optimizer": ("sgd", "adamw"),
    "attack.name": ("bim", "pgd", "segpgd"),
    "eval.mode": ("whole", "slide"),
    "protocol": ("default", "paper"),
    "model.dilation": ("torchvision", "paper"),
    "data.fill": ("zero", "mean"),
    "eval.score_at": ("input", "base"),
    "eval.pad": ("zero", "mean"),
    "eval.average": ("logits", "softmax"),
}

# ----------------------------------------------------------------------------- protocol presets
# ``protocol: paper`` sets every key below to the value of the paper's public code (docs/protocol.md),
# except the keys the YAML file or ``--set`` name explicitly. A value may be a function of the
# config (e.g. the base size depends on the dataset).
PAPER_BASE_SIZE = {"voc": 512, "cityscapes": 1024}  # semseg's VOC config; the DDC-AT code's 1024x512 Cityscapes
PAPER_SCORE_AT = {"voc": "input", "cityscapes": "base"}
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "model.deep_stem": True,
        "model.stem_width": 64,
        "model.dilation": "paper",
        "model.align_corners": True,
        "model.deep_sup_kernel": lambda cfg: 1 if cfg["model"]["arch"] == "deeplabv3" else 3,
        "data.fill": "mean",
        "data.rotate_prob": 0.5,
        "eval.mode": "slide",
        "eval.flip": True,
        "eval.base_size": lambda cfg: PAPER_BASE_SIZE.get(cfg["data"]["name"], 0),
        "eval.score_at": lambda cfg: PAPER_SCORE_AT.get(cfg["data"]["name"], "input"),
        "eval.pad": "mean",
        "eval.average": "softmax",
        "eval.attack_per_crop": False,  # ddcat attacks the whole inference path: stricter than the code
    },
}


def flat_keys(tree: dict[str, Any] = DEFAULTS, prefix: str = "") -> list[str]:
    """All dotted keys of a config tree, e.g. ``['seed', 'model.arch', ...]``."""
    keys: list[str] = []
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            keys.extend(flat_keys(value, key + "."))
        else:
            keys.append(key)
    return keys


def _default_of(key: str) -> Any:
    node: Any = DEFAULTS
    for part in key.split("."):
        node = node[part]
    return node


def _unknown(key: str, where: str) -> DdcatError:
    return DdcatError(f"unknown config key '{key}'{where}; valid keys: {', '.join(flat_keys())}")


def _check_value(key: str, value: Any, where: str) -> Any:
    default = _default_of(key)
    if default is None:
        allowed = _NULLABLE[key]
        if value is not None and not isinstance(value, allowed):
            raise DdcatError(f"config key '{key}'{where} must be {allowed[0].__name__} or null, got {value!r}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise DdcatError(f"config key '{key}'{where} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DdcatError(f"config key '{key}'{where} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DdcatError(f"config key '{key}'{where} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise DdcatError(f"config key '{key}'{where} must be a string, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise DdcatError(f"config key '{key}'{where} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    return value


def _set(cfg: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node: Any = DEFAULTS
    target = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise _unknown(key, where)
        node = node[part]
        if i < len(parts) - 1:
            target = target[part]
    if isinstance(node, dict):
        if not isinstance(value, dict):
            raise DdcatError(f"config key '{key}'{where} is a section; give one of its keys")
        for sub, subvalue in value.items():
            _set(cfg, f"{key}.{sub}", subvalue, where)
        return
    target[parts[-1]] = _check_value(key, value, where)


def merge(cfg: dict[str, Any], overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """A copy of ``cfg`` with the nested ``overrides`` applied and checked."""
    out = copy.deepcopy(cfg)
    if not isinstance(overrides, dict):
        raise DdcatError(f"config{where} must be a mapping of sections, got {type(overrides).__name__}")
    for key, value in overrides.items():
        _set(out, str(key), value, where)
    named = _named_keys(overrides)
    if "protocol" in named:  # the preset fills every key this mapping does not name
        out = apply_protocol(out, named)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=0.02'`` -> ``('train.lr', 0.02)``; the value is read as YAML."""
    if "=" not in text:
        raise DdcatError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DdcatError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise DdcatError(f"config file {path} is not valid YAML: {first}") from None
    return data or {}


def load_config(path: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file (if any), then ``--set`` overrides, all validated."""
    cfg = copy.deepcopy(DEFAULTS)
    explicit: set[str] = set()
    if path is not None:
        data = load_yaml(path)
        cfg = merge(cfg, data, where=f" in {path}")
        explicit |= _named_keys(data)
    for text in sets:
        key, value = parse_override(text)
        _set(cfg, key, value, where=" (--set)")
        explicit |= _named_keys({key: value})
    cfg = apply_protocol(cfg, explicit)
    validate(cfg)
    return cfg


def _named_keys(tree: Any, prefix: str = "") -> set[str]:
    """Dotted leaf keys a (partial, nested) override names."""
    if not isinstance(tree, dict):
        return {prefix[:-1]} if prefix else set()
    out: set[str] = set()
    for name, value in tree.items():
        out |= _named_keys(value, f"{prefix}{name}.")
    return out


def apply_protocol(cfg: dict[str, Any], explicit: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """A copy of ``cfg`` with the preset of ``cfg['protocol']`` applied to every key not in ``explicit``.

    Every key that some preset sets is set: to the chosen preset's value, or to its default when the
    chosen preset leaves it alone (so ``--set protocol=default`` undoes a file's ``protocol: paper``).
    """
    out = copy.deepcopy(cfg)
    chosen = PRESETS[out["protocol"]]
    for key in dict.fromkeys(k for preset in PRESETS.values() for k in preset):
        if key in explicit:
            continue
        value = chosen.get(key, _default_of(key))
        section, name = key.split(".")
        out[section][name] = value(out) if callable(value) else value
    return out


def apply_sets(cfg: dict[str, Any], sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    explicit: set[str] = set()
    for text in sets:
        key, value = parse_override(text)
        _set(out, key, value, where=" (--set)")
        explicit |= _named_keys({key: value})
    if "protocol" in explicit:  # a preset named here applies; one already resolved in cfg is left alone
        out = apply_protocol(out, explicit)
    validate(out)
    return out


def validate(cfg: dict[str, Any]) -> None:
    """Cross-key checks that a per-key type check cannot make."""
    t, a, d = cfg["train"], cfg["attack"], cfg["data"]
    if not 0.0 <= t["adv_fraction"] <= 1.0:
        raise DdcatError(f"config key 'train.adv_fraction' must lie in [0, 1], got {t['adv_fraction']}")
    for key in ("iters", "batch_size", "accum_steps", "crop_size", "save_every", "log_every"):
        if t[key] <= 0:
            raise DdcatError(f"config key 'train.{key}' must be positive, got {t[key]}")
    if t["lr"] <= 0:
        raise DdcatError(f"config key 'train.lr' must be positive, got {t['lr']}")
    if a["eps"] < 0:
        raise DdcatError(f"config key 'attack.eps' must be >= 0, got {a['eps']}")
    if a["alpha"] <= 0:
        raise DdcatError(f"config key 'attack.alpha' must be > 0, got {a['alpha']}")
    if a["steps"] < 0:
        raise DdcatError(f"config key 'attack.steps' must be >= 0, got {a['steps']}")
    if d["num_classes"] < 2:
        raise DdcatError(f"config key 'data.num_classes' must be at least 2, got {d['num_classes']}")
    if not 0.0 <= d["rotate_prob"] <= 1.0:
        raise DdcatError(f"config key 'data.rotate_prob' must lie in [0, 1], got {d['rotate_prob']}")
    e, m = cfg["eval"], cfg["model"]
    if e["base_size"] < 0:
        raise DdcatError(f"config key 'eval.base_size' must be >= 0 (0 = off), got {e['base_size']}")
    if m["stem_width"] < 0:
        raise DdcatError(f"config key 'model.stem_width' must be >= 0 (0 = width // 2), got {m['stem_width']}")
    if m["deep_sup_kernel"] not in (1, 3):
        raise DdcatError(f"config key 'model.deep_sup_kernel' must be 1 or 3, got {m['deep_sup_kernel']}")
    if cfg["model"]["output_stride"] not in (8, 16, 32):
        raise DdcatError(f"config key 'model.output_stride' must be 8, 16 or 32, got {cfg['model']['output_stride']}")


def dump(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
