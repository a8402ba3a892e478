"""ADE20K (MIT Scene Parsing, ``ADEChallengeData2016``): 150 classes, read from its own layout.

    ROOT/images/training/ADE_train_00000001.jpg      ROOT/annotations/training/ADE_train_00000001.png
    ROOT/images/validation/ADE_val_00000001.jpg      ROOT/annotations/validation/ADE_val_00000001.png

Annotations are single-channel PNGs with values 0..150: 0 is "other objects" and becomes the ignore
label 255, class c becomes c - 1 (the convention of mmsegmentation's ``reduce_zero_label`` and of the
robust-segmentation work evaluated on ADE20K: SEA / PIR-AT, rse). No list file is needed; every image
must have its annotation (a missing one is an error naming it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ddcat.constants import IGNORE_INDEX
from ddcat.data.listfile import ListDataset, load_image, load_label
from ddcat.errors import DdcatError

NUM_CLASSES = 150
SPLIT_DIRS = {"train": "training", "val": "validation"}

#: The 150 classes of SceneParsing (``objectInfo150``) in label order (raw value c -> class c - 1), by the
#: short names mmsegmentation's ADE20KDataset uses (the first word of each objectInfo150 entry).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """ADE20K's raw annotation (0 = other, 1..150) -> class indices 0..149 with 0 -> 255."""
    out = raw.astype(np.int16) - 1
    out[raw == 0] = IGNORE_INDEX
    return out.astype(np.uint8)


class ADE20K(ListDataset):
    """The ``split`` ("train" -> ``training``, "val" -> ``validation``) of an ADE20K tree."""

    def __init__(self, root: str | Path, split: str = "train", transform: Callable[..., Any] | None = None, seed: int = 0) -> None:
        self.root = Path(root)
        if split not in SPLIT_DIRS:
            raise DdcatError(f"unknown ade20k split '{split}': use train or val")
        images = self.root / "images" / SPLIT_DIRS[split]
        labels = self.root / "annotations" / SPLIT_DIRS[split]
        for folder in (images, labels):
            if not folder.is_dir():
                raise DdcatError(f"ade20k folder not found: {folder} (data.root must hold images/ and annotations/)")
        self.items = []
        for image in sorted(images.glob("*.jpg")):
            label = labels / f"{image.stem}.png"
            if not label.is_file():
                raise DdcatError(f"ade20k annotation not found for {image}: {label}")
            self.items.append((image, label))
        if not self.items:
            raise DdcatError(f"no .jpg images in {images}")
        self.list_file = images
        self.num_classes, self.transform, self.name = NUM_CLASSES, transform, "ade20k"
        self.seed, self.epoch = int(seed), 0
        self.class_names = list(ADE20K_CLASSES)

    def raw_label_values(self) -> tuple[int, int]:
        """Annotations on disk hold 0..150 (0 = other, mapped to 255 by :func:`reduce_zero_label`);
        anything else (151..255, 255 included) is refused by the loader and the data check."""
        return NUM_CLASSES + 1, 0

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.items[index]
        image = load_image(image_path)
        label = reduce_zero_label(load_label(label_path, *self.raw_label_values()))
        if image.shape[:2] != label.shape:
            (ih, iw), (lh, lw) = image.shape[:2], label.shape
            raise DdcatError(f"image {image_path} is {iw}x{ih} but label {label_path} is {lw}x{lh} (width x height)")
        return image, label
