"""Joint image/label transforms.

Images enter as ``uint8`` ``H x W x 3`` numpy arrays and labels as ``H x W`` integer arrays whose values
lie in ``0..255`` (255 = ignore). Transforms return a ``torch.float32`` image ``(3, H, W)`` in ``[0, 1]``
and a ``torch.int64`` label ``(H, W)``. Mean/std normalisation is *not* done here: it belongs inside
the model, so that attacks work on pixels in ``[0, 1]``.

Every transform is called as ``transform(image, label, rng)``; all its randomness comes from the
``numpy.random.Generator`` ``rng``, so a sample is a pure function of the input and the generator.

:class:`TrainTransform` follows the paper's training pipeline: random scale, random rotation, Gaussian
blur, horizontal flip, padding and random crop. The geometric steps are small pure functions
(:func:`rescale`, :func:`rotate`, :func:`blur`, :func:`hflip`, :func:`pad_to`, :func:`crop`) that
the class composes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter

from ddcat.constants import IGNORE_INDEX

# ``fill="mean"``: the ImageNet mean colour on 0..255 (the paper's code fills with the float mean
# 123.675, 116.28, 103.53 on its float images; ddcat's uint8 images hold it rounded).
MEAN_FILL = (124, 116, 104)
FILLS = {"zero": (0, 0, 0), "mean": MEAN_FILL}
# cv2.GaussianBlur with a 5x5 kernel and sigma 0 (the paper's code) uses sigma = 1.1.
BLUR_SIGMA = 1.1


def check_pair(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(image, label)`` pair and return it as ``(uint8 HxWx3, uint8 HxW)``."""
    image = np.asarray(image)
    label = np.asarray(label)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 HxWx3 array, got {image.dtype} {image.shape}")
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an integer HxW array, got {label.dtype} {label.shape}")
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must lie in 0..255, got {label.min()}..{label.max()}")
    return image, label.astype(np.uint8, copy=False)


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 HxWx3`` / integer ``HxW`` -> ``float32 (3,H,W)`` in [0, 1] / ``int64 (H,W)``."""
    img = torch.from_numpy(np.array(image.transpose(2, 0, 1), dtype=np.float32)).div_(255.0)
    lab = torch.from_numpy(np.array(label, dtype=np.int64))
    return img, lab


# ----------------------------------------------------------------------------- pure steps


def rescale(image: np.ndarray, label: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``factor``: bilinear for the image, nearest for the label (at least 1 x 1)."""
    h, w = label.shape
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    if (nh, nw) == (h, w):
        return image, label
    img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
    return img, lab


def rotate(
    image: np.ndarray, label: np.ndarray, angle: float, ignore_index: int = IGNORE_INDEX, fill: tuple[int, int, int] = (0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``angle`` degrees (counter-clockwise) about the centre, keeping the size.

    Uncovered pixels become ``fill`` in the image and ``ignore_index`` in the label.
    """
    if angle == 0:
        return image, label
    img = Image.fromarray(image).rotate(angle, resample=Image.BILINEAR, fillcolor=tuple(int(c) for c in fill))
    lab = Image.fromarray(label).rotate(angle, resample=Image.NEAREST, fillcolor=int(ignore_index))
    return np.asarray(img), np.asarray(lab)


def blur(image: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of the image with standard deviation ``sigma`` pixels."""
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


def hflip(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and label left-right."""
    return image[:, ::-1], label[:, ::-1]


def pad_to(
    image: np.ndarray,
    label: np.ndarray,
    height: int,
    width: int,
    ignore_index: int = IGNORE_INDEX,
    fill: tuple[int, int, int] = (0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Pad (centred) to at least ``height x width``: image with ``fill``, label with ``ignore_index``."""
    h, w = label.shape
    ph, pw = max(height - h, 0), max(width - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    img = np.stack(
        [np.pad(image[:, :, c], pads, mode="constant", constant_values=int(fill[c])) for c in range(image.shape[2])], axis=2
    )
    lab = np.pad(label, pads, mode="constant", constant_values=ignore_index)
    return img, lab


def crop(
    image: np.ndarray, label: np.ndarray, top: int, left: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``height x width`` window at ``(top, left)``."""
    return image[top : top + height, left : left + width], label[top : top + height, left : left + width]


def _crop_hw(crop_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(crop_size, (int, np.integer)):
        h = w = int(crop_size)
    else:
        h, w = (int(v) for v in crop_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    return h, w


# ----------------------------------------------------------------------------- transforms


class TrainTransform:
    """The training augmentation: scale, rotate, blur, flip, pad and crop, then tensors.

    Args:
        crop_size: output size, an int or ``(height, width)``.
        scale: ``(min, max)`` of the uniform random scale factor.
        rotate: maximum absolute rotation in degrees (uniform in ``[-rotate, rotate]``; 0 = off).
        blur: apply a Gaussian blur (sigma :data:`BLUR_SIGMA`) with probability 0.5.
        flip: flip horizontally with probability 0.5.
        ignore_index: label written where rotation or padding leaves no data.
        fill: ``"zero"`` or ``"mean"`` (the paper's code): the image colour where rotation or padding
            leaves no data.
        rotate_prob: probability of rotating a sample (1 = always; the paper's code: 0.5).

    The random draws happen in a fixed order whatever the switches are, so turning one step off does
    not change the others' parameters for the same ``rng``. (With ``rotate_prob < 1`` one more draw
    decides the rotation, after the others; ``rotate_prob = 1`` draws nothing, the historical stream.)
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale: tuple[float, float] = (0.5, 2.0),
        rotate: float = 10.0,
        blur: bool = True,
        flip: bool = True,
        ignore_index: int = IGNORE_INDEX,
        fill: str = "zero",
        rotate_prob: float = 1.0,
    ) -> None:
        self.crop_h, self.crop_w = _crop_hw(crop_size)
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
        if not 0.0 <= rotate_prob <= 1.0:
            raise ValueError(f"rotate_prob must lie in [0, 1], got {rotate_prob}")
        self.fill, self.rotate_prob = fill, float(rotate_prob)
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale must satisfy 0 < min <= max, got {scale}")
        if rotate < 0:
            raise ValueError(f"rotate must be >= 0, got {rotate}")
        if not 0 <= ignore_index <= 255:
            raise ValueError(f"ignore_index must lie in 0..255, got {ignore_index}")
        self.scale = (lo, hi)
        self.rotate = float(rotate)
        self.blur = bool(blur)
        self.flip = bool(flip)
        self.ignore_index = int(ignore_index)

    def params(self, rng: np.random.Generator) -> dict[str, float | bool]:
        """Draw the per-sample parameters (crop position excepted) from ``rng``."""
        factor = rng.uniform(*self.scale)
        angle = rng.uniform(-self.rotate, self.rotate)
        do_blur = bool(rng.random() < 0.5)
        do_flip = bool(rng.random() < 0.5)
        do_rotate = bool(rng.random() < self.rotate_prob) if self.rotate_prob < 1.0 else True
        return {
            "scale": float(factor),
            "angle": float(angle) if self.rotate > 0 and do_rotate else 0.0,
            "blur": do_blur and self.blur,
            "flip": do_flip and self.flip,
        }

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = check_pair(image, label)
        p = self.params(rng)
        image, label = rescale(image, label, p["scale"])
        colour = FILLS[self.fill]
        image, label = rotate(image, label, p["angle"], self.ignore_index, colour)
        if p["blur"]:
            image = blur(image)
        if p["flip"]:
            image, label = hflip(image, label)
        image, label = pad_to(image, label, self.crop_h, self.crop_w, self.ignore_index, colour)
        h, w = label.shape
        top = int(rng.integers(0, h - self.crop_h + 1))
        left = int(rng.integers(0, w - self.crop_w + 1))
        image, label = crop(image, label, top, left, self.crop_h, self.crop_w)
        return to_tensors(image, label)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size=({self.crop_h}, {self.crop_w}), scale={self.scale}, "
            f"rotate={self.rotate}, blur={self.blur}, flip={self.flip}, ignore_index={self.ignore_index}, "
            f"fill={self.fill!r}, rotate_prob={self.rotate_prob})"
        )


class EvalTransform:
    """Evaluation: conversion to tensors only (the full image, no resizing)."""

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = check_pair(image, label)
        return to_tensors(image, label)

    def __repr__(self) -> str:
        return "EvalTransform()"
