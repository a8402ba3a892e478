"""Synthetic data, transforms, epoch-seeded augmentation and build_dataset."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ddcat.config import DEFAULTS, load_config
from ddcat.data import (
    NUM_CLASSES,
    EvalTransform,
    SyntheticSegmentation,
    TrainTransform,
    build_dataset,
)
from ddcat.data import synthetic as syn
from ddcat.data import transforms as T
from ddcat.errors import DdcatError


def _cfg(**data):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(data)
    return cfg


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_per_seed_split_index():
    a = SyntheticSegmentation(4, 64, 6, seed=3)
    b = SyntheticSegmentation(4, 64, 6, seed=3)
    for i in range(4):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
    other_seed = SyntheticSegmentation(4, 64, 6, seed=4)
    other_split = SyntheticSegmentation(4, 64, 6, seed=3, split="val")
    assert not np.array_equal(a[0][0], other_seed[0][0])
    assert not np.array_equal(a[0][0], other_split[0][0])
    assert not np.array_equal(a[0][0], a[1][0])
    np.testing.assert_array_equal(a[-1][0], a[3][0])
    with pytest.raises(IndexError):
        a[4]


def test_synthetic_raw_dtypes_and_ranges():
    ds = SyntheticSegmentation(3, 48, 6, seed=0)
    image, label = ds[0]
    assert image.dtype == np.uint8 and image.shape == (48, 48, 3)
    assert label.dtype == np.uint8 and label.shape == (48, 48)
    assert label.max() < 6
    assert image.std() > 10  # textured, not flat


@pytest.mark.parametrize("num_classes", [2, 6, 21])
def test_synthetic_classes_appear(num_classes):
    ds = SyntheticSegmentation(12, 32, num_classes, seed=1)
    seen = set()
    for i in range(len(ds)):
        seen |= set(np.unique(ds[i][1]).tolist())
    assert 0 in seen
    assert max(seen) < num_classes
    assert len(seen - {0}) >= min(num_classes - 1, 5)


def test_synthetic_other_sizes_and_limits():
    image, label = SyntheticSegmentation(1, 100, 4, seed=0)[0]
    assert image.shape == (100, 100, 3) and label.shape == (100, 100)
    with pytest.raises(ValueError):
        SyntheticSegmentation(1, 16, 4, seed=0)
    with pytest.raises(ValueError):
        SyntheticSegmentation(1, 64, 1, seed=0)
    with pytest.raises(ValueError):
        SyntheticSegmentation(1, 64, syn.MAX_CLASSES + 1, seed=0)


def test_class_layout_needs_shape_and_texture():
    combos = syn.class_combos(6)
    assert len(combos) == 5 and len(set(combos)) == 5
    shapes = {s for s, _ in combos}
    textures = {t for _, t in combos}
    assert len(shapes) >= 2 and len(textures) >= 2  # neither cue alone names the class
    assert not set(combos) & set(syn.negative_combos(6))
    assert len(syn.class_combos(21)) == 20
    assert syn.class_names(6)[0] == "background" and len(syn.class_names(6)) == 6


def test_colour_does_not_identify_the_class():
    ds = SyntheticSegmentation(24, 64, 6, seed=0)
    means: dict[int, list[np.ndarray]] = {}
    for i in range(len(ds)):
        image, label = ds[i]
        for c in np.unique(label):
            if c and (label == c).sum() > 30:
                means.setdefault(int(c), []).append(image[label == c].mean(axis=0))
    assert len(means) >= 3
    for c, values in means.items():
        if len(values) >= 3:  # the same class comes in clearly different colours
            spread = np.ptp(np.stack(values), axis=0).max()
            assert spread > 60, (c, spread)
    # and the colour ranges of different classes overlap
    lows = [np.stack(v).min(0) for v in means.values()]
    highs = [np.stack(v).max(0) for v in means.values()]
    assert np.all(np.max(lows, axis=0) < np.min(highs, axis=0))


def test_shapes_have_comparable_areas():
    x, y = np.meshgrid(np.linspace(-1.5, 1.5, 301), np.linspace(-1.5, 1.5, 301))
    areas = {s: syn.shape_mask(s, x, y).mean() for s in syn.SHAPES}
    assert max(areas.values()) < 2.0 * min(areas.values())


# ----------------------------------------------------------------------------- transforms


def _pair(h, w):
    """An image whose red channel encodes the label (label * 10), so alignment can be checked."""
    label = (np.arange(h * w).reshape(h, w) % 7).astype(np.uint8)
    label[: h // 2, : w // 3] = 3  # some structure that is not symmetric
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = label * 10
    image[..., 1] = np.arange(w, dtype=np.uint8)[None, :]
    return image, label


def test_eval_transform_converts():
    image, label = _pair(20, 30)
    label[0, 0] = 255
    x, y = EvalTransform()(image, label, np.random.default_rng(0))
    assert x.dtype == torch.float32 and x.shape == (3, 20, 30)
    assert y.dtype == torch.int64 and y.shape == (20, 30)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(y, torch.from_numpy(label.astype(np.int64)))
    assert torch.allclose(x[0] * 255, torch.from_numpy(image[..., 0]).float())


def test_train_transform_crop_size_and_types():
    image, label = _pair(50, 70)
    t = TrainTransform(32)
    for seed in range(5):
        x, y = t(image, label, np.random.default_rng(seed))
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (32, 32) and y.dtype == torch.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert set(y.unique().tolist()) <= set(range(7)) | {255}
    x, y = TrainTransform((24, 40))(image, label, np.random.default_rng(0))
    assert x.shape == (3, 24, 40) and y.shape == (24, 40)


def test_train_transform_pads_with_ignore():
    image, label = _pair(20, 30)
    t = TrainTransform(40, scale=(1.0, 1.0), rotate=0, blur=False, flip=False)
    x, y = t(image, label, np.random.default_rng(0))
    assert x.shape == (3, 40, 40)
    assert (y == 255).sum() == 40 * 40 - 20 * 30
    assert torch.all(x[:, y == 255] == 0)
    kept = y != 255
    assert torch.equal(y[kept].view(20, 30), torch.from_numpy(label.astype(np.int64)))


def test_train_transform_flip_and_crop_keep_image_and_label_aligned():
    image, label = _pair(40, 40)
    t = TrainTransform(24, scale=(1.0, 1.0), rotate=0, blur=False, flip=True)
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        flips.add(t.params(np.random.default_rng(seed))["flip"])
        x, y = t(image, label, rng)
        assert torch.equal((x[0] * 255).round().long(), y * 10)
        # the green channel holds the column index: increasing unless flipped
        cols = (x[1, 0] * 255).round()
        step = int(cols[1] - cols[0])
        assert step in (1, -1)
    assert flips == {True, False}


def test_flip_pure_function():
    image, label = _pair(6, 9)
    fi, fl = T.hflip(image, label)
    np.testing.assert_array_equal(fi[:, 0], image[:, -1])
    np.testing.assert_array_equal(fl[:, 0], label[:, -1])


def test_rotation_fills_ignore_and_black():
    image = np.full((40, 40, 3), 200, np.uint8)
    label = np.full((40, 40), 2, np.uint8)
    ri, rl = T.rotate(image, label, 30.0)
    assert rl[0, 0] == 255 and rl[-1, -1] == 255 and rl[20, 20] == 2
    assert (ri[0, 0] == 0).all() and (ri[20, 20] == 200).all()
    assert set(np.unique(rl).tolist()) == {2, 255}  # nearest: no new label values
    t = TrainTransform(40, scale=(1.0, 1.0), rotate=45.0, blur=False, flip=False)
    x, y = t(image, label, np.random.default_rng(1))
    assert abs(t.params(np.random.default_rng(1))["angle"]) > 5
    assert (y == 255).any() and torch.all(x[:, y == 255] == 0)


def test_rescale_sizes_and_nearest_labels():
    image, label = _pair(20, 30)
    si, sl = T.rescale(image, label, 2.0)
    assert si.shape == (40, 60, 3) and sl.shape == (40, 60)
    assert set(np.unique(sl)) <= set(np.unique(label))
    si, sl = T.rescale(image, label, 0.5)
    assert si.shape == (10, 15, 3) and sl.shape == (10, 15)


def test_blur_smooths():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, ::2] = 255
    assert T.blur(image).std() < image.std() / 2


def test_transform_rejects_bad_input():
    with pytest.raises(ValueError):
        TrainTransform(0)
    with pytest.raises(ValueError):
        TrainTransform(32, scale=(2.0, 1.0))
    with pytest.raises(ValueError):
        EvalTransform()(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        EvalTransform()(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8))


def test_switching_a_step_off_keeps_the_other_draws():
    a = TrainTransform(32, blur=True).params(np.random.default_rng(5))
    b = TrainTransform(32, blur=False).params(np.random.default_rng(5))
    assert a["scale"] == b["scale"] and a["angle"] == b["angle"] and a["flip"] == b["flip"]


# ----------------------------------------------------------------------------- epochs


def test_set_epoch_rng_is_deterministic_and_independent_of_instances():
    t = TrainTransform(32, scale=(0.5, 2.0))
    a = SyntheticSegmentation(4, 48, 6, seed=7, transform=t)
    b = SyntheticSegmentation(4, 48, 6, seed=7, transform=t)  # e.g. in another worker or rank
    a.set_epoch(2)
    b.set_epoch(2)
    for i in (0, 3):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x2, _ = a[1]
    a.set_epoch(3)
    x3, _ = a[1]
    assert not torch.equal(x2, x3)
    a.set_epoch(2)
    assert torch.equal(a[1][0], x2)


def test_epoch_rng_is_the_documented_stream():
    seen = []

    def spy(image, label, rng):
        seen.append(rng.random())
        return image, label

    ds = SyntheticSegmentation(3, 32, 3, seed=11, transform=spy)
    ds.set_epoch(4)
    ds[2]
    assert seen == [np.random.default_rng([11, 4, 2]).random()]


# ----------------------------------------------------------------------------- build


def test_build_synthetic_train_and_val():
    cfg = _cfg(num_train=5, num_val=3, image_size=48, num_classes=4)
    cfg["train"]["crop_size"] = 40
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) == 5 and len(val) == 3
    assert isinstance(train.transform, TrainTransform) and isinstance(val.transform, EvalTransform)
    assert train.transform.scale == (cfg["data"]["scale_min"], cfg["data"]["scale_max"])
    x, y = train[0]
    assert x.shape == (3, 40, 40) and y.shape == (40, 40)
    x, y = val[0]
    assert x.shape == (3, 48, 48) and y.max() < 4
    loader = torch.utils.data.DataLoader(train, batch_size=2)
    xb, yb = next(iter(loader))
    assert xb.shape == (2, 3, 40, 40) and yb.dtype == torch.int64


@pytest.mark.parametrize(
    ("data", "split", "needle"),
    [
        ({}, "test", "test"),
        ({"image_size": 16}, "val", "data.image_size"),
        ({"num_classes": 40}, "val", "data.num_classes"),
        ({"name": "voc", "root": None, "num_classes": 21}, "val", "data.root"),
        ({"name": "voc", "root": "/tmp", "num_classes": 6}, "val", "21"),
        ({"name": "cityscapes", "root": "/tmp", "num_classes": 21}, "val", "19"),
        ({"name": "list", "root": "/tmp", "train_list": None}, "train", "data.train_list"),
        ({"name": "imagenet"}, "val", "imagenet"),
    ],
)
def test_build_errors(data, split, needle):
    with pytest.raises(DdcatError) as info:
        build_dataset(_cfg(**data), split)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"scale_min": 0.0}, "data.scale_min"),
        ({"scale_min": 2.0, "scale_max": 1.0}, "data.scale_max"),
        ({"rotate": -1.0}, "data.rotate"),
        ({"num_val": 0}, "data.num_val"),
    ],
)
def test_data_ranges_are_config_rules(data, needle):
    """The ranges build_dataset relies on are checked once, by the config (ddcat.config)."""
    with pytest.raises(DdcatError) as info:
        load_config(None, [f"data.{k}={v}" for k, v in data.items()])
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_num_classes_table():
    assert NUM_CLASSES == {"voc": 21, "cityscapes": 19}


def test_synthetic_content_is_the_same_for_every_run_seed():
    """All runs of an experiment train and evaluate on the same images; the run seed moves only
    the augmentation (so seed-to-seed spread is training variance, not a different val set)."""
    from ddcat.config import load_config
    from ddcat.data import build_dataset

    a = load_config(None, ["seed=0", "data.num_val=4"])
    b = load_config(None, ["seed=1", "data.num_val=4"])
    va, vb = build_dataset(a, "val"), build_dataset(b, "val")
    assert all(np.array_equal(va[i][0].numpy(), vb[i][0].numpy()) for i in range(4))
    ta, tb = build_dataset(a, "train"), build_dataset(b, "train")
    assert np.array_equal(ta.raw(0)[0], tb.raw(0)[0])
    assert not np.array_equal(ta[0][0].numpy(), tb[0][0].numpy())  # different augmentation
    c = load_config(None, ["data.seed=1", "data.num_val=4"])
    assert not np.array_equal(build_dataset(c, "val")[0][0].numpy(), va[0][0].numpy())
