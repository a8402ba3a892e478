"""Build the dataset a run configuration describes (see :data:`ddcat.config.DEFAULTS`)."""

from __future__ import annotations

from typing import Any

from ddcat.config import CHOICES
from ddcat.data.listfile import NUM_CLASSES, ListDataset, cityscapes, voc
from ddcat.data.synthetic import MAX_CLASSES, SyntheticSegmentation
from ddcat.data.transforms import EvalTransform, TrainTransform
from ddcat.errors import DdcatError

SPLITS = ("train", "val")
NAMES = CHOICES["data.name"]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DdcatError(f"unknown data split '{split}': use train or val")


def build_transform(cfg: dict[str, Any], split: str) -> TrainTransform | EvalTransform:
    """:class:`TrainTransform` from ``data.*`` and ``train.crop_size`` for train, else :class:`EvalTransform`."""
    _check_split(split)
    if split != "train":
        return EvalTransform()
    d = cfg["data"]  # ranges and scale_min <= scale_max: checked by ddcat.config
    return TrainTransform(
        cfg["train"]["crop_size"], scale=(d["scale_min"], d["scale_max"]), rotate=d["rotate"], blur=d["blur"], flip=d["flip"], fill=d["fill"], rotate_prob=d["rotate_prob"]
    )


def _synthetic(cfg: dict[str, Any], split: str, transform: Any) -> SyntheticSegmentation:
    d = cfg["data"]
    key = "num_train" if split == "train" else "num_val"
    if d["image_size"] < 32:
        raise DdcatError(f"config key 'data.image_size' must be at least 32, got {d['image_size']}")
    if not 2 <= d["num_classes"] <= MAX_CLASSES:
        raise DdcatError(
            f"config key 'data.num_classes' must lie in 2..{MAX_CLASSES} for synthetic data, got {d['num_classes']}"
        )
    return SyntheticSegmentation(d[key], d["image_size"], d["num_classes"], d["seed"], split, transform, aug_seed=cfg["seed"])


def _list_based(cfg: dict[str, Any], split: str, transform: Any) -> ListDataset:
    d, name = cfg["data"], cfg["data"]["name"]
    if d["root"] is None:
        raise DdcatError(f"config key 'data.root' must be set for data.name={name}")
    list_key = "train_list" if split == "train" else "val_list"
    list_file = d[list_key]
    seed = cfg["seed"]
    if name in NUM_CLASSES:
        if d["num_classes"] != NUM_CLASSES[name]:
            raise DdcatError(
                f"config key 'data.num_classes' is {d['num_classes']} but {name} has {NUM_CLASSES[name]} classes"
                f" (set data.num_classes={NUM_CLASSES[name]})"
            )
        make = voc if name == "voc" else cityscapes
        return make(d["root"], split, list_file=list_file, transform=transform, seed=seed, allow_outside_root=d["allow_outside_root"])
    if list_file is None:
        raise DdcatError(f"config key 'data.{list_key}' must be set for data.name=list")
    return ListDataset(d["root"], list_file, d["num_classes"], transform=transform, name="list", seed=seed, allow_outside_root=d["allow_outside_root"])


def build_dataset(cfg: dict[str, Any], split: str) -> SyntheticSegmentation | ListDataset:
    """The ``split`` ("train" or "val") dataset of the full config ``cfg``, with its transform."""
    _check_split(split)
    name = cfg["data"]["name"]
    if name not in NAMES:
        raise DdcatError(f"config key 'data.name' must be one of {', '.join(NAMES)}, got {name!r}")
    transform = build_transform(cfg, split)
    if name == "synthetic":
        return _synthetic(cfg, split, transform)
    if name == "ade20k":
        from ddcat.data.ade20k import ADE20K, NUM_CLASSES as ADE_CLASSES

        d = cfg["data"]
        if d["root"] is None:
            raise DdcatError("config key 'data.root' must be set for data.name=ade20k")
        if d["num_classes"] != ADE_CLASSES:
            raise DdcatError(f"config key 'data.num_classes' is {d['num_classes']} but ade20k has {ADE_CLASSES} classes (set data.num_classes={ADE_CLASSES})")
        return ADE20K(d["root"], split, transform=transform, seed=cfg["seed"])
    return _list_based(cfg, split, transform)
