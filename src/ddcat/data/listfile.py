"""Datasets described by list files, in the format of the paper's code.

A list file holds one ``image_rel label_rel`` pair per line, both relative to a data root (blank lines
are skipped). Labels are single-channel PNGs of class indices with 255 = ignore: VOC
``SegmentationClassAug`` palette ("P" mode) PNGs, or Cityscapes ``*_gtFine_labelTrainIds.png``
greyscale PNGs. Palette PNGs are read as their indices, never through the palette.

The list and the existence of every file are checked when the dataset is built (cheap); the image
content (decodable, label values, matching sizes) when an item is loaded. Every problem is a
:class:`~ddcat.errors.DdcatError` with a one-line message naming the file and the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddcat.constants import IGNORE_INDEX
from ddcat.errors import DdcatError


NUM_CLASSES: dict[str, int] = {"voc": 21, "cityscapes": 19}

DEFAULT_LISTS: dict[str, dict[str, str]] = {
    "voc": {"train": "list/train_aug.txt", "val": "list/val.txt"},
    "cityscapes": {"train": "list/fine_train.txt", "val": "list/fine_val.txt"},
}

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip

CLASS_NAMES: dict[str, tuple[str, ...]] = {"voc": VOC_CLASSES, "cityscapes": CITYSCAPES_CLASSES}

_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")


# ----------------------------------------------------------------------------- list parsing


def read_list(root: Path, list_file: Path, allow_outside_root: bool = False) -> list[tuple[Path, Path]]:
    """Parse ``list_file`` into ``(image_path, label_path)`` pairs under ``root``; check they exist.

    A path that is absolute or climbs out of the root (``..``) is refused unless
    ``allow_outside_root``: a list file from elsewhere must not make ddcat read arbitrary files."""
    if not list_file.is_file():
        raise DdcatError(f"list file not found: {list_file}")
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DdcatError(f"cannot read list file {list_file}: {exc}") from None
    pairs: list[tuple[Path, Path]] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DdcatError(
                f"{list_file}, line {number}: expected 'image_path label_path', got {line.strip()!r}"
            )
        if not allow_outside_root:
            for rel in fields:
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise DdcatError(
                        f"{list_file}, line {number}: path {rel!r} leaves the data root "
                        "(absolute or '..'); set data.allow_outside_root=true if that is intended"
                    )
        image, label = root / fields[0], root / fields[1]
        for kind, path in (("image", image), ("label", label)):
            if not path.is_file():
                raise DdcatError(f"{list_file}, line {number}: {kind} file not found: {path}")
        pairs.append((image, label))
    if not pairs:
        raise DdcatError(f"list file is empty: {list_file}")
    return pairs


# ----------------------------------------------------------------------------- file loading


def _open(path: Path, kind: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DdcatError(f"cannot read {kind} {path}: {reason}") from None
    return img


def load_image(path: Path) -> np.ndarray:
    """An RGB ``uint8 HxWx3`` array (greyscale and palette images are converted)."""
    img = _open(path, "image")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_label(path: Path, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A ``uint8 HxW`` array of class indices; every value must be ``< num_classes`` or ``ignore_index``
    (the rule a dataset states with ``raw_label_values()``)."""
    img = _open(path, "label")
    if img.mode not in _LABEL_MODES:
        raise DdcatError(f"label {path} must be a single-channel PNG of class indices, got mode {img.mode}")
    label = np.asarray(img)
    bad = (label >= num_classes) & (label != ignore_index)
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(str(int(v)) for v in values[:5]) + (", ..." if len(values) > 5 else "")
        allowed = f"0..{num_classes - 1}" + (f" or {ignore_index} (ignore)" if ignore_index >= num_classes else "")
        raise DdcatError(f"label {path} holds value(s) {shown}: expected {allowed}")
    return label.astype(np.uint8)


def load_pair(
    image_path: Path, label_path: Path, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """Load and cross-check one ``(image, label)`` pair."""
    image = load_image(image_path)
    label = load_label(label_path, num_classes, ignore_index)
    if image.shape[:2] != label.shape:
        (ih, iw), (lh, lw) = image.shape[:2], label.shape
        raise DdcatError(f"image {image_path} is {iw}x{ih} but label {label_path} is {lw}x{lh} (width x height)")
    return image, label


# ----------------------------------------------------------------------------- dataset


class ListDataset:
    """A segmentation dataset read from a list file of ``image_rel label_rel`` lines.

    Args:
        root: data root; the list file and the paths in it are relative to it.
        list_file: the list file (relative to ``root`` unless absolute).
        num_classes: number of classes ``K``; label values must be ``< K`` or 255.
        transform: ``transform(image, label, rng)``; ``None`` returns the raw numpy arrays.
        name: a short name for logs and reports.
        seed: base seed of the augmentation streams (see :meth:`set_epoch`).
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path,
        num_classes: int,
        transform: Callable[..., Any] | None = None,
        name: str = "list",
        seed: int = 0,
        allow_outside_root: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DdcatError(f"data root not found: {self.root}")
        if num_classes < 1 or num_classes > 255:
            raise DdcatError(f"num_classes must lie in 1..255 for dataset '{name}', got {num_classes}")
        self.list_file = self.root / list_file
        self.items = read_list(self.root, self.list_file, allow_outside_root)
        self.num_classes = int(num_classes)
        self.transform = transform
        self.name = name
        self.seed = int(seed)
        self.epoch = 0
        names = CLASS_NAMES.get(name)
        self.class_names = list(names) if names and len(names) == num_classes else [
            f"class{c}" for c in range(num_classes)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream: item ``i`` uses ``default_rng([seed, epoch, i])``."""
        self.epoch = int(epoch)

    def raw_label_values(self) -> tuple[int, int]:
        """Which values a label file of this dataset may hold on disk, as ``(n, extra)``: ``0..n-1``
        or ``extra``. Here the class indices ``0..K-1`` and the ignore label 255, read as they are;
        a dataset whose files are remapped on loading (ADE20K) states its own. The loader
        (:meth:`raw`) and the check before the first write (:func:`ddcat.data.check.check_dataset`)
        both apply this rule."""
        return self.num_classes, self.ignore_index

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed, validated ``(image uint8 HxWx3, label uint8 HxW)`` of item ``index``."""
        image_path, label_path = self.items[index]
        return load_pair(image_path, label_path, *self.raw_label_values())

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image, label = self.raw(index)
        if self.transform is None:
            return image, label
        return self.transform(image, label, np.random.default_rng([self.seed, self.epoch, index]))

    def __repr__(self) -> str:
        return f"ListDataset(name={self.name!r}, root='{self.root}', list_file='{self.list_file}', items={len(self)})"


def _named(
    dataset: str,
    root: str | Path,
    split: str,
    list_file: str | Path | None,
    transform: Callable[..., Any] | None,
    seed: int,
    allow_outside_root: bool = False,
) -> ListDataset:
    if list_file is None:
        if split not in DEFAULT_LISTS[dataset]:
            raise DdcatError(
                f"unknown {dataset} split '{split}': use {' or '.join(DEFAULT_LISTS[dataset])}, or give a list file"
            )
        list_file = DEFAULT_LISTS[dataset][split]
    return ListDataset(root, list_file, NUM_CLASSES[dataset], transform=transform, name=dataset, seed=seed, allow_outside_root=allow_outside_root)


def voc(
    root: str | Path,
    split: str = "train",
    list_file: str | Path | None = None,
    transform: Callable[..., Any] | None = None,
    seed: int = 0,
    allow_outside_root: bool = False,
) -> ListDataset:
    """PASCAL VOC 2012 (augmented): 21 classes, lists ``list/train_aug.txt`` / ``list/val.txt``."""
    return _named("voc", root, split, list_file, transform, seed, allow_outside_root)


def cityscapes(
    root: str | Path,
    split: str = "train",
    list_file: str | Path | None = None,
    transform: Callable[..., Any] | None = None,
    seed: int = 0,
    allow_outside_root: bool = False,
) -> ListDataset:
    """Cityscapes fine (trainIds): 19 classes, lists ``list/fine_train.txt`` / ``list/fine_val.txt``."""
    return _named("cityscapes", root, split, list_file, transform, seed, allow_outside_root)
