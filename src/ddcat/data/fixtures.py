"""Tiny on-disk datasets in exactly the real VOC and Cityscapes layouts, for tests and examples.

* :func:`make_voc_fixture` writes ``JPEGImages/<id>.jpg``, ``SegmentationClassAug/<id>.png`` (palette
  PNGs of class indices 0..20, with a 255 "void" outline around each object, as in VOC) and the lists
  ``list/train_aug.txt`` and ``list/val.txt``.
* :func:`make_cityscapes_fixture` writes ``leftImg8bit/<split>/<city>/<city>_000000_<n>_leftImg8bit.png``,
  ``gtFine/<split>/<city>/<city>_000000_<n>_gtFine_labelTrainIds.png`` (greyscale PNGs of trainIds
  0..18, 255 = ignore) and the lists ``list/fine_train.txt`` and ``list/fine_val.txt``.

Images hold a noisy background with a few filled rectangles and ellipses whose colour depends on
their class, so a model can fit them. Everything is deterministic from ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ddcat.constants import IGNORE_INDEX
from ddcat.data.palette import voc_colormap


def voc_palette() -> list[int]:
    """The standard 256-entry PASCAL VOC colour map, flattened ``[r0, g0, b0, r1, ...]`` (``Image.putpalette``)."""
    return [int(v) for v in voc_colormap(256).reshape(-1)]


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (a one-pixel inner outline)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def toy_pair(
    rng: np.random.Generator, height: int, width: int, num_classes: int, void_border: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A ``(uint8 HxWx3 image, uint8 HxW label)`` with 1-3 class-coloured shapes on noise."""
    image = rng.integers(0, 60, size=(height, width, 3)).astype(np.float64)
    label = np.zeros((height, width), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    colours = np.random.default_rng(12345).integers(40, 256, size=(num_classes, 3))
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, num_classes))
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
        if rng.random() < 0.5:
            mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        else:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        image[mask] = colours[cls]
        label[mask] = cls
        if void_border:
            label[_border(mask)] = IGNORE_INDEX
    return image.clip(0, 255).astype(np.uint8), label


def _write_list(path: Path, pairs: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{image} {label}\n" for image, label in pairs))


def make_voc_fixture(
    root: str | Path, n_train: int = 4, n_val: int = 2, size: int | tuple[int, int] = 64, seed: int = 0
) -> Path:
    """Write a tiny VOC 2012 (SegmentationClassAug) tree under ``root``; returns ``root``.

    ``size`` is an int or ``(height, width)``.
    """
    root = Path(root)
    height, width = _size_hw(size)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 21])
    palette = voc_palette()
    lists: dict[str, list[tuple[str, str]]] = {"train_aug": [], "val": []}
    for i in range(n_train + n_val):
        split = "train_aug" if i < n_train else "val"
        stem = f"2007_{i:06d}"
        image, label = toy_pair(rng, height, width, 21, void_border=True)
        Image.fromarray(image).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        png = Image.frombytes("P", (width, height), label.tobytes())  # palette PNG of indices
        png.putpalette(palette)
        png.save(root / "SegmentationClassAug" / f"{stem}.png")
        lists[split].append((f"JPEGImages/{stem}.jpg", f"SegmentationClassAug/{stem}.png"))
    _write_list(root / "list" / "train_aug.txt", lists["train_aug"])
    _write_list(root / "list" / "val.txt", lists["val"])
    return root


def make_cityscapes_fixture(
    root: str | Path, n_train: int = 4, n_val: int = 2, size: int | tuple[int, int] = (64, 128), seed: int = 0
) -> Path:
    """Write a tiny Cityscapes (gtFine trainIds) tree under ``root``; returns ``root``.

    ``size`` is an int or ``(height, width)``; the default keeps Cityscapes' 1:2 aspect ratio.
    """
    root = Path(root)
    height, width = _size_hw(size)
    rng = np.random.default_rng([seed, 19])
    lists: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        city = "aachen" if split == "train" else "frankfurt"
        stem = f"{city}_000000_{i:06d}"
        image_rel = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
        label_rel = f"gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png"
        image, label = toy_pair(rng, height, width, 19, void_border=False)
        label[: max(1, height // 16)] = IGNORE_INDEX  # an ignored strip, like the ego-vehicle/void areas
        for rel, array in ((image_rel, image), (label_rel, label)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / rel)
        lists[split].append((image_rel, label_rel))
    _write_list(root / "list" / "fine_train.txt", lists["train"])
    _write_list(root / "list" / "fine_val.txt", lists["val"])
    return root
