"""Datasets and transforms: procedural synthetic data, VOC / Cityscapes list files, augmentation.

Every dataset returns ``transform(image, label, rng)`` for item ``i`` with
``rng = numpy.random.default_rng([seed, epoch, i])`` (``epoch`` set by ``set_epoch``), so a sample
depends only on ``(seed, epoch, i)``, never on worker processes or ranks. Training transforms return
``float32 (3, H, W)`` images in [0, 1] and ``int64 (H, W)`` labels with 255 = ignore.
"""

from ddcat.constants import IGNORE_INDEX
from ddcat.data.build import build_dataset, build_transform
from ddcat.data.fixtures import make_cityscapes_fixture, make_voc_fixture
from ddcat.data.listfile import CLASS_NAMES, NUM_CLASSES, ListDataset, cityscapes, voc
from ddcat.data.synthetic import SyntheticSegmentation
from ddcat.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "EvalTransform",
    "ListDataset",
    "SyntheticSegmentation",
    "TrainTransform",
    "build_dataset",
    "build_transform",
    "cityscapes",
    "make_cityscapes_fixture",
    "make_voc_fixture",
    "voc",
]
