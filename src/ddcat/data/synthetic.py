"""Procedural synthetic segmentation data: shapes x textures on cluttered backgrounds.

:class:`SyntheticSegmentation` needs no files. Item ``i`` of split ``s`` is drawn from
``np.random.default_rng([seed, split_id(s), i])``, where ``split_id`` is the CRC-32 of the split name
(so it never coincides with the small epoch numbers of the augmentation streams
``default_rng([seed, epoch, i])``). The same ``(seed, split, index)`` always gives the same pair.

Generative process (image side ``S``, ``K`` classes)
----------------------------------------------------
* **Classes.** Class 0 is background. Object class ``c`` in ``1..K-1`` is one *(shape, texture)*
  combination (:func:`class_combos`): shapes from ``disc, ring, cross, triangle, square``, textures
  from ``stripes, checker, dots, smooth, grid``, laid out row by row on a grid with
  ``ceil(sqrt(K-1))`` textures per shape. With three or more object classes neither the shape nor the
  texture alone names the class (K=6: disc and ring, each with stripes, checker and dots except
  ring/dots). At most 25 object classes (K <= 26).
* **Textures** are two-colour patterns of period ``max(4, S/10)`` px (times U(0.85, 1.2)) with a
  random phase and a fixed orientation jittered by +-15 degrees (stripes run vertically; checker and
  grid are axis-aligned), so each texture is one recognisable pattern. ``smooth`` is one colour with
  a mild linear shading.
* **Colour is no cue.** Every object, distractor and the background draw their colours from the same
  distribution, independently of the class: the two colours of a pattern are uniform in
  [0.05, 0.95]^3, at least 0.35 apart and at least 0.3 apart in luma, so the pattern is visible.
* **Background.** A linear gradient between two random colours along a random direction, plus
  low-frequency colour noise (a random 4x4 grid upsampled bilinearly, amplitude +-0.15).
* **Layers, in painter's order.** 2-4 *objects* of uniformly random classes (diameter 25-50 % of
  ``S``), 0-1 *hard negative* (a shape-family member whose (shape, texture) combination is no class)
  and 0-2 *blobs* (irregular unions of 3-5 ellipses with any texture), the distractors 15-40 % of
  ``S`` across. The layers are shuffled and painted one over the other: objects write their class
  into the label, distractors write 0 (background), so occlusion decides every pixel's label. Each
  layer has a random centre (10-90 % of ``S``) and rotation; textures are laid in image coordinates.
* **Noise.** Gaussian pixel noise (sigma 0.02) on the final image, which is then quantised to uint8.

The constants below set these numbers. Items are raw ``(image uint8 SxSx3, label uint8 SxS)``
arrays, or ``transform(image, label, rng)`` with ``rng = default_rng([seed, epoch, index])``
(see :meth:`SyntheticSegmentation.set_epoch`).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable

import numpy as np
from PIL import Image

from ddcat.constants import IGNORE_INDEX

SHAPES: tuple[str, ...] = ("disc", "ring", "cross", "triangle", "square")
TEXTURES: tuple[str, ...] = ("stripes", "checker", "dots", "smooth", "grid")
MAX_CLASSES = 1 + len(SHAPES) * len(TEXTURES)

NOISE_SIGMA = 0.02  # pixel noise on the final image
MIN_CONTRAST = 0.35  # RGB distance between the two colours of a pattern
MIN_LUMA_CONTRAST = 0.3  # luma difference between them
LUMA = np.array([0.299, 0.587, 0.114])
ANGLE_JITTER = 15.0  # degrees of random texture orientation around its fixed direction
RING_INNER = 0.45  # inner radius of a ring, relative to its outer radius
# Layer counts (inclusive ranges) and diameters (fractions of the image side).
NUM_OBJECTS = (2, 4)
NUM_NEGATIVES = (0, 1)
NUM_BLOBS = (0, 2)
OBJECT_DIAMETER = (0.25, 0.50)
DISTRACTOR_DIAMETER = (0.15, 0.40)
# Texture period in pixels: max(TEXTURE_MIN_PERIOD, TEXTURE_PERIOD * side), times U(0.85, 1.2).
TEXTURE_MIN_PERIOD = 4.0
TEXTURE_PERIOD = 1.0 / 10.0


# ----------------------------------------------------------------------------- class layout


def class_combos(num_classes: int) -> list[tuple[str, str]]:
    """The (shape, texture) pair of each object class ``1..num_classes-1`` (index 0 = class 1)."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must lie in [2, {MAX_CLASSES}], got {num_classes}")
    n = num_classes - 1
    n_textures = math.ceil(math.sqrt(n))
    return [(SHAPES[i // n_textures], TEXTURES[i % n_textures]) for i in range(n)]


def negative_combos(num_classes: int) -> list[tuple[str, str]]:
    """The (shape, texture) pairs that are no class: painted as background distractors."""
    used = set(class_combos(num_classes))
    return [(s, t) for s in SHAPES for t in TEXTURES if (s, t) not in used]


def class_names(num_classes: int) -> list[str]:
    """``['background', 'disc/stripes', ...]``."""
    return ["background"] + [f"{s}/{t}" for s, t in class_combos(num_classes)]


def split_id(split: str) -> int:
    """A stable integer for a split name (CRC-32), used in the generation seed."""
    return zlib.crc32(split.encode("utf-8"))


# ----------------------------------------------------------------------------- geometry


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, each ``size x size`` float arrays."""
    c = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(c, c)


def _rotated(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to ``(cx, cy)``, rotated by ``-angle`` (so the frame turns by ``angle``)."""
    dx, dy = x - cx, y - cy
    cos, sin = math.cos(angle), math.sin(angle)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of the unit-radius ``shape`` at normalised coordinates ``(u, v)``.

    The sizes are set so that the shapes cover roughly similar areas (about 2-3 r^2).
    """
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":  # equilateral, circumradius 1.2
        u, v = u / 1.2, v / 1.2
        s3 = math.sqrt(3.0)
        return (v >= -0.5) & (s3 * u + v <= 1.0) & (-s3 * u + v <= 1.0)
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= RING_INNER**2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def blob_mask(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cx: float, cy: float, radius: float
) -> np.ndarray:
    """An irregular blob: the union of 3-5 random ellipses around ``(cx, cy)``."""
    mask = np.zeros(x.shape, dtype=bool)
    for _ in range(int(rng.integers(3, 6))):
        ox, oy = rng.uniform(-0.5, 0.5, size=2) * radius
        a, b = rng.uniform(0.3, 0.7, size=2) * radius
        u, v = _rotated(x, y, cx + ox, cy + oy, rng.uniform(0, math.pi))
        mask |= (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return mask


# ----------------------------------------------------------------------------- appearance


def texture_pattern(texture: str, u: np.ndarray, v: np.ndarray, period: float, phase: np.ndarray) -> np.ndarray:
    """A 0/1 float pattern on pixel coordinates ``(u, v)`` (already rotated); all zeros for smooth."""
    pu, pv = u + phase[0] * period * 2, v + phase[1] * period * 2
    if texture == "stripes":
        return ((pu / period) % 1.0 < 0.5).astype(np.float64)
    if texture == "checker":
        return ((np.floor(pu / period) + np.floor(pv / period)) % 2).astype(np.float64)
    if texture == "dots":
        q = 1.5 * period
        du, dv = (pu % q) - q / 2, (pv % q) - q / 2
        return (du * du + dv * dv <= (0.3 * q) ** 2).astype(np.float64)
    if texture == "grid":
        q = 1.5 * period
        w = max(1.0, 0.25 * q)
        return (((pu % q) < w) | ((pv % q) < w)).astype(np.float64)
    if texture == "smooth":
        return np.zeros(u.shape, dtype=np.float64)
    raise ValueError(f"unknown texture {texture!r}")


def colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours in [0.05, 0.95], at least :data:`MIN_CONTRAST` apart in RGB and
    :data:`MIN_LUMA_CONTRAST` in luma (rejection sampling)."""
    a = rng.uniform(0.05, 0.95, size=3)
    for _ in range(50):
        b = rng.uniform(0.05, 0.95, size=3)
        if np.linalg.norm(a - b) >= MIN_CONTRAST and abs(LUMA @ (a - b)) >= MIN_LUMA_CONTRAST:
            return a, b
    return a, np.where(LUMA @ a > 0.5, 0.05, 0.95) * np.ones(3)  # fallback: black or white


def paint_texture(rng: np.random.Generator, texture: str, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """A full ``size x size x 3`` canvas carrying ``texture`` in random colours, phase and period."""
    angle = rng.uniform(-1, 1) * math.radians(ANGLE_JITTER)
    period = max(TEXTURE_MIN_PERIOD, TEXTURE_PERIOD * size) * rng.uniform(0.85, 1.2)
    phase = rng.uniform(0, 1, size=2)
    u, v = _rotated(x, y, size / 2, size / 2, angle)
    a, b = colour_pair(rng)
    if texture == "smooth":
        shade = rng.uniform(-0.15, 0.15) * (u / size)  # mild linear shading
        return np.clip(a[None, None, :] + shade[..., None], 0.0, 1.0)
    t = texture_pattern(texture, u, v, period, phase)[..., None]
    return a * (1.0 - t) + b * t


def background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """A gradient between two random colours plus low-frequency colour noise."""
    c0, c1 = rng.uniform(0.05, 0.95, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)) / size + 0.5
    img = c0 * (1.0 - ramp[..., None]) + c1 * ramp[..., None]
    coarse = (rng.uniform(0, 255, size=(4, 4, 3))).astype(np.uint8)
    low = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float64) / 255.0
    return img + 0.3 * (low - 0.5)


# ----------------------------------------------------------------------------- one sample


def _layer_specs(rng: np.random.Generator, num_classes: int) -> list[tuple[str, Any]]:
    """The shuffled painter's list: ``('object', class)``, ``('negative', (shape, tex))``, ``('blob', tex)``."""
    negatives = negative_combos(num_classes)
    layers: list[tuple[str, Any]] = []
    for _ in range(int(rng.integers(NUM_OBJECTS[0], NUM_OBJECTS[1] + 1))):
        layers.append(("object", int(rng.integers(1, num_classes))))
    if negatives:
        for _ in range(int(rng.integers(NUM_NEGATIVES[0], NUM_NEGATIVES[1] + 1))):
            layers.append(("negative", negatives[int(rng.integers(len(negatives)))]))
    for _ in range(int(rng.integers(NUM_BLOBS[0], NUM_BLOBS[1] + 1))):
        layers.append(("blob", TEXTURES[int(rng.integers(len(TEXTURES)))]))
    order = rng.permutation(len(layers))
    return [layers[i] for i in order]


def generate(rng: np.random.Generator, image_size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image uint8 SxSx3, label uint8 SxS)`` pair drawn from ``rng`` (see the module docstring)."""
    size = int(image_size)
    combos = class_combos(num_classes)
    x, y = _grid(size)
    img = background(rng, x, y, size)
    label = np.zeros((size, size), dtype=np.uint8)
    for kind, what in _layer_specs(rng, num_classes):
        lo, hi = OBJECT_DIAMETER if kind == "object" else DISTRACTOR_DIAMETER
        radius = 0.5 * size * rng.uniform(lo, hi)
        cx, cy = rng.uniform(0.1, 0.9, size=2) * size
        if kind == "blob":
            mask, texture, value = blob_mask(rng, x, y, cx, cy, radius), what, 0
        else:
            shape, texture = combos[what - 1] if kind == "object" else what
            u, v = _rotated(x, y, cx, cy, rng.uniform(0, 2 * math.pi))
            mask = shape_mask(shape, u / radius, v / radius)
            value = what if kind == "object" else 0
        canvas = paint_texture(rng, texture, x, y, size)
        img[mask] = canvas[mask]
        label[mask] = value
    img = img + rng.normal(0.0, NOISE_SIGMA, size=img.shape)
    image = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return image, label


# ----------------------------------------------------------------------------- dataset


class SyntheticSegmentation:
    """A procedural, file-free segmentation dataset (see the module docstring).

    Args:
        num_images: number of items.
        image_size: side of the square images (at least 32).
        num_classes: classes including background, 2..26.
        seed: seed of the generated content (the same for every training run of an experiment,
            so that all runs train and are evaluated on the same images).
        aug_seed: seed of the augmentation streams (the run's seed); defaults to ``seed``.
        split: split name; different splits give different images.
        transform: ``transform(image, label, rng)``; ``None`` returns the raw numpy arrays.
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        num_images: int,
        image_size: int,
        num_classes: int,
        seed: int,
        split: str = "train",
        transform: Callable[..., Any] | None = None,
        aug_seed: int | None = None,
    ) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {image_size}")
        class_combos(num_classes)  # validates num_classes
        self.num_images = int(num_images)
        self.image_size = int(image_size)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.aug_seed = self.seed if aug_seed is None else int(aug_seed)
        self.split = split
        self.transform = transform
        self.epoch = 0
        self.name = "synthetic"
        self.class_names = class_names(num_classes)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.num_images

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream: item ``i`` uses ``default_rng([aug_seed, epoch, i])``."""
        self.epoch = int(epoch)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed ``(image, label)`` of item ``index``.

        Generated items are kept in memory (4 bytes per pixel: 16 MiB for 1024 images at 64 px),
        so each image is drawn once per process however many epochs read it."""
        index = self._check_index(index)
        cached = self._cache.get(index)
        if cached is None:
            rng = np.random.default_rng([self.seed, split_id(self.split), index])
            cached = self._cache[index] = generate(rng, self.image_size, self.num_classes)
        return cached[0].copy(), cached[1].copy()

    def __getitem__(self, index: int) -> Any:
        index = self._check_index(index)
        image, label = self.raw(index)
        if self.transform is None:
            return image, label
        return self.transform(image, label, np.random.default_rng([self.aug_seed, self.epoch, index]))

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.num_images
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} items")
        return index

    def __repr__(self) -> str:
        return (
            f"SyntheticSegmentation(num_images={self.num_images}, image_size={self.image_size}, "
            f"num_classes={self.num_classes}, seed={self.seed}, split={self.split!r})"
        )
