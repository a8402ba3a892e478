"""Run configuration: defaults, YAML files and ``--set key=value`` overrides.

A configuration is a nested dict with the sections below. Every key a file or an override names
must exist in :data:`DEFAULTS` and have the default's type (ints are accepted where a float is
expected, ``null`` where the default is ``None``); anything else is a :class:`DdcatError` that
lists the valid keys.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ddcat.attacks.registry import NORMS
from ddcat.attacks.registry import names as attack_names
from ddcat.constants import ALPHA, EPS, FGSM_RS_STEP
from ddcat.errors import DdcatError, show
from ddcat.outdir import check_readable_file

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
        "pretrained": None,  # path to a torchvision-style ResNet state dict, or a ddcat checkpoint (every weight)
        # --- the paper code's trunk and heads (docs/protocol.md); defaults = ddcat's historical model
        "dilation": "torchvision",  # torchvision (first block of a dilated stage keeps the previous rate) | paper (every block)
        "stem_width": 0,  # deep stem widths s, s, 2s (0 = width // 2; the paper's code: 64)
        "align_corners": False,  # bilinear upsampling convention (the paper's code: true)
        "deep_sup_kernel": 3,  # kernel of the deep-supervision head's first conv (the paper's DeepLabv3: 1)
        # the user's own network instead of arch/backbone (docs/user_models.md)
        "factory": None,  # "package.module:function" returning an nn.Module
        "kwargs": None,  # mapping of arguments for the factory (YAML scalars, lists, mappings)
        "weights": None,  # state dict (.pt) or .safetensors file loaded into the factory's model
        "normalize": None,  # null | imagenet | {mean: [3 values], std: [3 values]}, applied inside the adapter
        "ddc_head": None,  # dotted path of the module producing the logits, for DDC-AT (e.g. decode_head.classifier)
    },
    "data": {
        "name": "synthetic",  # synthetic | voc | cityscapes | ade20k | list
        "root": None,  # data root for list-file datasets
        "num_classes": 6,
        "train_list": None,  # list files, relative to root (defaults per dataset)
        "val_list": None,
        "allow_outside_root": False,  # list files may name absolute or '..' paths
        "check": True,  # check every listed file (headers, label values) before the first write (data/check.py)
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
        "method": "clean",  # clean | sat | ddcat | ddcat-m | ddcat-n | fgsm-rs | free
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
        # Gaussian-noise augmentation (a base model for `ddcat certify`): std in [0, 1] pixel units
        # added to the clean share of the batch (the whole batch for clean; sat's clean images)
        "noise_sigma": 0.0,
        # --- single-step and free adversarial training, the watch for false robustness (docs/recipes.md)
        "free_replays": 4,  # m of free AT (Shafahi et al. 2019): replays of each batch; train.iters counts replays
        "robust_check_every": 0,  # every N iterations: PGD-10 and the training attack on held-out images (0 = off)
        "robust_check_images": 16,  # the first N validation images, fixed for the run
    },
    "attack": {  # the attack used during adversarial training
        "name": "bim",  # an attack the registry allows for training (CHOICES)
        "eps": EPS,
        "alpha": ALPHA,
        "steps": 3,
        "fgsm_rs_step": FGSM_RS_STEP,  # fgsm-rs (Wong et al. 2020): step size as a multiple of eps (1.25 = the published setting)
        "precision": "fp32",  # fp32 | bf16: the training attack's forwards (DDC-AT's B_clean and B_adv too)
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
        "norm": "linf",  # threat model of ddcat eval's attacks: linf | l2 (eps in pixel units either way)
    },
}

# Keys whose default is None: the types they accept.
_NULLABLE: dict[str, tuple[type, ...]] = {
    "model.pretrained": (str,),
    "model.factory": (str,),
    "model.kwargs": (dict,),
    "model.weights": (str,),
    "model.normalize": (dict, str),
    "model.ddc_head": (str,),
    "data.root": (str,),
    "data.train_list": (str,),
    "data.val_list": (str,),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": ("pspnet", "deeplabv3"),
    "model.backbone": ("resnet18", "resnet50", "resnet101"),
    "data.name": ("synthetic", "voc", "cityscapes", "ade20k", "list"),
    "train.method": ("clean", "sat", "ddcat", "ddcat-m", "ddcat-n", "fgsm-rs", "free"),
    "train.amp": ("off", "bf16", "fp16"),
    "train.optimizer": ("sgd", "adamw"),
    "attack.name": attack_names(train=True),  # the registry's training attacks
    "attack.precision": ("fp32", "bf16"),
    "eval.mode": ("whole", "slide"),
    "protocol": ("default", "paper"),
    "model.dilation": ("torchvision", "paper"),
    "data.fill": ("zero", "mean"),
    "eval.score_at": ("input", "base"),
    "eval.pad": ("zero", "mean"),
    "eval.average": ("logits", "softmax"),
    "eval.norm": NORMS,  # the threat models (ddcat.attacks.norms)
    "model.output_stride": (8, 16, 32),
    "model.deep_sup_kernel": (1, 3),
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
        "train.mask_ignore": False,  # the paper's mask loss counts void and padding pixels
        "eval.mode": "slide",
        "eval.flip": True,
        "eval.base_size": lambda cfg: PAPER_BASE_SIZE.get(cfg["data"]["name"], 0),
        "eval.score_at": lambda cfg: PAPER_SCORE_AT.get(cfg["data"]["name"], "input"),
        "eval.pad": "mean",
        "eval.average": "softmax",
        "eval.attack_per_crop": False,  # ddcat attacks the whole inference path: stricter than the code
    },
}


@dataclass(frozen=True)
class Range:
    """Allowed interval of a numeric key; ``None`` = unbounded, ``open_*`` excludes the bound."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def contains(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.open_lo and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.open_hi and v == self.hi)))

    def describe(self) -> str:
        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else f"{v:g}"

        if self.lo is not None and self.hi is None:
            return f"be {'>' if self.open_lo else '>='} {num(self.lo)}"
        if self.hi is not None and self.lo is None:
            return f"be {'<' if self.open_hi else '<='} {num(self.hi)}"
        return f"lie in {'(' if self.open_lo else '['}{num(self.lo)}, {num(self.hi)}{')' if self.open_hi else ']'}"


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, open_lo=True)

#: Methods whose attack takes one step whatever ``attack.steps`` says (its value is not read).
SINGLE_STEP_METHODS = ("fgsm-rs", "free")

#: Every numeric key's allowed values (every float key must also be finite). A bounded
#: ``model.width`` keeps a crafted config or checkpoint from asking for a huge allocation.
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**31 - 1),
    "model.width": Range(1, 1024),
    "model.head_channels": Range(0, 16384),
    "model.dropout": Range(0.0, 1.0, open_hi=True),
    "data.num_classes": Range(2, 255),
    "data.seed": Range(0, 2**31 - 1),
    "data.image_size": Range(8, 8192),
    "data.num_train": AT_LEAST_1,
    "data.num_val": AT_LEAST_1,
    "data.scale_min": POSITIVE,
    "data.scale_max": POSITIVE,
    "data.rotate": Range(0.0, 180.0),
    "data.workers": Range(0, 256),
    "train.iters": AT_LEAST_1,
    "train.batch_size": AT_LEAST_1,
    "train.accum_steps": AT_LEAST_1,
    "train.crop_size": Range(8, 8192),
    "train.lr": POSITIVE,
    "train.head_lr_mult": POSITIVE,
    "train.momentum": Range(0.0, 1.0, open_hi=True),
    "train.weight_decay": AT_LEAST_0,
    "train.poly_power": AT_LEAST_0,
    "train.deep_sup_weight": AT_LEAST_0,
    "train.adv_fraction": Range(0.0, 1.0),
    "train.lambda_main": AT_LEAST_0,
    "train.lambda_aux": AT_LEAST_0,
    "train.lambda_mask": AT_LEAST_0,
    "train.save_every": AT_LEAST_1,
    "train.log_every": AT_LEAST_1,
    "train.noise_sigma": Range(0.0, 10.0),
    "attack.eps": Range(0.0, 1.0),
    "attack.alpha": Range(0.0, 1.0, open_lo=True),
    "attack.steps": Range(0, 10000),
    "attack.fgsm_rs_step": POSITIVE,
    "train.free_replays": Range(1, 1000),
    "train.robust_check_every": AT_LEAST_0,
    "train.robust_check_images": Range(1, 100000),
    "eval.crop_size": Range(0, 8192),
    "eval.stride_rate": Range(0.0, 1.0, open_lo=True),
    "eval.batch_size": AT_LEAST_1,
    "eval.max_images": AT_LEAST_0,
    "eval.base_size": Range(0, 8192),
    "model.stem_width": Range(0, 1024),
    "data.rotate_prob": Range(0.0, 1.0),
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


def check_value(key: str, value: Any, where: str = "") -> Any:
    """``value`` for ``key`` after the type, choice and range checks (ints widen to floats)."""
    default = _default_of(key)
    if default is None:
        allowed = _NULLABLE[key]
        if value is not None and not isinstance(value, allowed):
            raise DdcatError(f"config key '{key}'{where} must be {' or '.join(t.__name__ for t in allowed)} or null, got {show(value)}")
        if value is not None and key in _USER_MODEL_CHECKS:
            _USER_MODEL_CHECKS[key](value, key, where)
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise DdcatError(f"config key '{key}'{where} must be true or false, got {show(value)}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DdcatError(f"config key '{key}'{where} must be an integer, got {show(value)}")
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DdcatError(f"config key '{key}'{where} must be a number, got {show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise DdcatError(f"config key '{key}'{where} must be a finite number, got {value}")
    elif isinstance(default, str):
        if isinstance(value, bool) and ("off" if not value else "on") in CHOICES.get(key, ()):
            value = "off" if not value else "on"  # YAML 1.1 reads a bare off / on as a boolean
        if not isinstance(value, str):
            raise DdcatError(f"config key '{key}'{where} must be a string, got {show(value)}")
    if key in CHOICES and value not in CHOICES[key]:
        raise DdcatError(f"config key '{key}'{where} must be one of {', '.join(map(str, CHOICES[key]))}, got {show(value)}")
    if key in RANGES and not RANGES[key].contains(value):
        raise DdcatError(f"config key '{key}'{where} must {RANGES[key].describe()}, got {value}")
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
    target[parts[-1]] = check_value(key, value, where)


def merge(cfg: dict[str, Any], overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """A copy of ``cfg`` with the nested ``overrides`` applied and checked."""
    out = copy.deepcopy(cfg)
    if not isinstance(overrides, dict):
        raise DdcatError(f"config{where} must be a mapping of sections, got {type(overrides).__name__}")
    for key, value in overrides.items():
        _set(out, show(key) if not isinstance(key, str) else key, value, where)
    named = _named_keys(overrides)
    if "protocol" in named:  # the preset fills every key this mapping does not name
        out = apply_protocol(out, named)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=0.02'`` -> ``('train.lr', 0.02)``; the value is read as YAML."""
    if "=" not in text:
        raise DdcatError(f"--set expects key=value, got {show(text)}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that rejects a key given twice in one mapping (YAML itself keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {show(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file as a dict. An empty file is an empty dict (no overrides); a key given twice,
    a file that is not UTF-8 or not YAML, or a top level that is not a mapping is an error."""
    path = Path(path)
    check_readable_file(path, what)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DdcatError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DdcatError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DdcatError(f"{what} {path} is not valid YAML{where}: {show(first)[1:-1]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DdcatError(f"{what} {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file (if any), then ``--set`` overrides, then the ``protocol``
    preset for every key neither names; validated."""
    cfg = copy.deepcopy(DEFAULTS)
    explicit: set[str] = set()
    if path is not None:
        data = load_yaml(path)
        cfg = merge(cfg, data, where=f" in {path}")
        explicit |= _named_keys(data)
    return apply_sets(cfg, sets, explicit, resolve_protocol=True)


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


def apply_sets(
    cfg: dict[str, Any], sets: list[str] | tuple[str, ...], explicit: set[str] | frozenset[str] = frozenset(), resolve_protocol: bool = False
) -> dict[str, Any]:
    """A copy of ``cfg`` with ``--set key=value`` overrides applied, then validated as a whole.

    A preset named by the overrides (or ``resolve_protocol``) fills every key not named by them or
    by ``explicit``; a preset already resolved in ``cfg`` is left alone otherwise."""
    out = copy.deepcopy(cfg)
    named = set(explicit)
    for text in sets:
        key, value = parse_override(text)
        _set(out, key, value, where=" (--set)")
        named |= _named_keys({key: value})
    if resolve_protocol or "protocol" in named:
        out = apply_protocol(out, named)
    validate(out)
    return out


# --- user models (model.factory): value checks of the keys that hold more than a scalar ---------
def _check_kwargs(value: Any, key: str, where: str) -> None:
    """YAML plain data only (scalars, lists, string-keyed mappings): it is stored in checkpoints
    read with ``weights_only=True`` and hashed into experiment run ids."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_kwargs(v, f"{key}[{i}]", where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise DdcatError(f"config key '{key}'{where} must have string keys, got {show(k)}")
            _check_kwargs(v, f"{key}.{k}", where)
        return
    raise DdcatError(f"config key '{key}'{where} must hold YAML scalars, lists and mappings only, got a {type(value).__name__}")


def _check_normalize(value: Any, key: str, where: str) -> None:
    ok = value == "imagenet" or (
        isinstance(value, dict) and set(value) == {"mean", "std"}
        and all(isinstance(value[k], list) and len(value[k]) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[k]) for k in ("mean", "std"))
        and all(v > 0 for v in value["std"])
    )
    if not ok:
        raise DdcatError(f"config key '{key}'{where} must be null, imagenet or {{mean: [3 numbers], std: [3 positive numbers]}}, got {show(value)}")


_USER_MODEL_CHECKS = {"model.kwargs": _check_kwargs, "model.normalize": _check_normalize}
_USER_MODEL_KEYS = ("kwargs", "weights", "normalize", "ddc_head")
# -----------------------------------------------------------------------------------------------


def validate(cfg: dict[str, Any]) -> None:
    """Cross-key checks that a per-key check (type, choice, range) cannot make."""
    t, a, d = cfg["train"], cfg["attack"], cfg["data"]
    if not cfg["model"].get("factory"):
        for key in _USER_MODEL_KEYS:
            if cfg["model"].get(key) is not None:
                raise DdcatError(f"config key 'model.{key}' applies to model.factory models only; set model.factory too")
    if t["noise_sigma"] > 0 and t["method"] not in ("clean", "sat"):
        raise DdcatError(f"config key 'train.noise_sigma' ({t['noise_sigma']}) applies to --method clean and sat only, not {t['method']}")
    if t["noise_sigma"] > 0 and t["method"] == "sat" and t["adv_fraction"] >= 1.0:
        raise DdcatError(f"config key 'train.noise_sigma' ({t['noise_sigma']}) noises SAT's clean share, and 'train.adv_fraction' "
                         f"({t['adv_fraction']}) leaves no clean image: no noise would be added; lower train.adv_fraction or set noise_sigma 0")
    if d["scale_min"] > d["scale_max"]:
        raise DdcatError(f"config key 'data.scale_min' ({d['scale_min']}) must not exceed 'data.scale_max' ({d['scale_max']})")
    if t["method"] != "clean" and t["adv_fraction"] > 0:
        if a["steps"] == 0 and t["method"] not in SINGLE_STEP_METHODS and a["name"] != "fgsm-rs":
            raise DdcatError(f"config key 'attack.steps' is 0 for --method {t['method']}: the 'adversarial' images would be clean; use --method clean or steps >= 1")
        if a["eps"] == 0:
            raise DdcatError(f"config key 'attack.eps' is 0 for --method {t['method']}: the 'adversarial' images would be clean; use --method clean or eps > 0")


def dump(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
