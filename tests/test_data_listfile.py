"""List-file datasets: VOC / Cityscapes fixtures in the real layouts, and every user error."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddcat.config import DEFAULTS
from ddcat.data import (
    ListDataset,
    TrainTransform,
    build_dataset,
    cityscapes,
    make_cityscapes_fixture,
    make_voc_fixture,
    voc,
)
from ddcat.errors import DdcatError


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return make_voc_fixture(tmp_path / "voc", n_train=3, n_val=2, size=(40, 56))


@pytest.fixture
def city_root(tmp_path: Path) -> Path:
    return make_cityscapes_fixture(tmp_path / "cityscapes", n_train=2, n_val=2, size=(32, 64))


def _raises(fn, *needles):
    with pytest.raises(DdcatError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, message
    return message


def _write_list(root: Path, text: str, name: str = "list/custom.txt") -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return name


# ----------------------------------------------------------------------------- fixtures / readers


def test_voc_fixture_layout_and_reader(voc_root: Path):
    lines = (voc_root / "list/train_aug.txt").read_text().splitlines()
    assert len(lines) == 3
    image_rel, label_rel = lines[0].split()
    assert image_rel.startswith("JPEGImages/") and image_rel.endswith(".jpg")
    assert label_rel.startswith("SegmentationClassAug/") and label_rel.endswith(".png")
    assert Image.open(voc_root / label_rel).mode == "P"  # index PNG with the VOC palette

    train, val = voc(voc_root, "train"), voc(voc_root, "val")
    assert len(train) == 3 and len(val) == 2 and train.num_classes == 21
    assert train.class_names[0] == "background" and train.class_names[15] == "person"
    image, label = train[0]
    assert image.dtype == np.uint8 and image.shape == (40, 56, 3)
    assert label.dtype == np.uint8 and label.shape == (40, 56)
    values = set(np.unique(label).tolist())
    assert values <= set(range(21)) | {255} and 255 in values and len(values - {0, 255}) >= 1


def test_cityscapes_fixture_layout_and_reader(city_root: Path):
    first = (city_root / "list/fine_train.txt").read_text().split()
    assert first[0].startswith("leftImg8bit/train/") and first[0].endswith("_leftImg8bit.png")
    assert first[1].startswith("gtFine/train/") and first[1].endswith("_gtFine_labelTrainIds.png")
    train, val = cityscapes(city_root, "train"), cityscapes(city_root, "val")
    assert len(train) == 2 and len(val) == 2 and train.num_classes == 19
    assert train.class_names[0] == "road"
    image, label = val[1]
    assert image.shape == (32, 64, 3) and label.shape == (32, 64)
    assert set(np.unique(label).tolist()) <= set(range(19)) | {255}


def test_build_dataset_voc_and_cityscapes(voc_root: Path, city_root: Path):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(name="voc", root=str(voc_root), num_classes=21)
    cfg["train"]["crop_size"] = 32
    x, y = build_dataset(cfg, "train")[0]
    assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
    x, y = build_dataset(cfg, "val")[0]
    assert x.shape == (3, 40, 56)
    cfg["data"].update(name="cityscapes", root=str(city_root), num_classes=19)
    assert len(build_dataset(cfg, "val")) == 2
    # list overrides
    cfg["data"]["val_list"] = "list/fine_train.txt"
    assert len(build_dataset(cfg, "val")) == 2
    cfg["data"].update(name="list", root=str(voc_root), num_classes=21, train_list="list/val.txt")
    ds = build_dataset(cfg, "train")
    assert len(ds) == 2 and ds.name == "list"


def test_list_dataset_epoch_rng(voc_root: Path):
    t = TrainTransform(24)
    a = ListDataset(voc_root, "list/train_aug.txt", 21, transform=t, seed=5)
    b = ListDataset(voc_root, "list/train_aug.txt", 21, transform=t, seed=5)
    a.set_epoch(1)
    b.set_epoch(1)
    assert torch.equal(a[2][0], b[2][0]) and torch.equal(a[2][1], b[2][1])
    b.set_epoch(2)
    assert not torch.equal(a[2][0], b[2][0])


def test_blank_lines_are_skipped(voc_root: Path):
    lines = (voc_root / "list/val.txt").read_text().splitlines()
    name = _write_list(voc_root, "\n" + lines[0] + "\n\n   \n" + lines[1] + "\n\n")
    assert len(ListDataset(voc_root, name, 21)) == 2


# ----------------------------------------------------------------------------- errors at construction


def test_missing_root(tmp_path: Path):
    _raises(lambda: ListDataset(tmp_path / "nowhere", "list/x.txt", 21), "nowhere")


def test_missing_list_file(voc_root: Path):
    _raises(lambda: ListDataset(voc_root, "list/nope.txt", 21), "nope.txt", "not found")
    _raises(lambda: voc(voc_root, "test"), "test")


def test_empty_list_file(voc_root: Path):
    name = _write_list(voc_root, "\n  \n")
    _raises(lambda: ListDataset(voc_root, name, 21), "custom.txt", "empty")


def test_malformed_line(voc_root: Path):
    good = (voc_root / "list/val.txt").read_text().splitlines()[0]
    name = _write_list(voc_root, f"{good}\nJPEGImages/only_one.jpg\n")
    _raises(lambda: ListDataset(voc_root, name, 21), "custom.txt", "line 2", "only_one.jpg")
    name = _write_list(voc_root, f"{good} extra\n")
    _raises(lambda: ListDataset(voc_root, name, 21), "line 1")


def test_missing_image_or_label(voc_root: Path):
    image_rel, label_rel = (voc_root / "list/val.txt").read_text().split()[:2]
    name = _write_list(voc_root, f"JPEGImages/ghost.jpg {label_rel}\n")
    _raises(lambda: ListDataset(voc_root, name, 21), "ghost.jpg", "image", "line 1")
    name = _write_list(voc_root, f"{image_rel} SegmentationClassAug/ghost.png\n")
    _raises(lambda: ListDataset(voc_root, name, 21), "ghost.png", "label")


# ----------------------------------------------------------------------------- errors at load time


def _single(root: Path, image_rel: str, label_rel: str, num_classes: int = 21) -> ListDataset:
    return ListDataset(root, _write_list(root, f"{image_rel} {label_rel}\n"), num_classes)


def test_corrupt_image_is_reported_at_load(voc_root: Path):
    label_rel = (voc_root / "list/val.txt").read_text().split()[1]
    (voc_root / "JPEGImages/broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = _single(voc_root, "JPEGImages/broken.jpg", label_rel)  # construction is cheap: no decoding
    _raises(lambda: ds[0], "broken.jpg", "cannot read image")


def test_corrupt_label_is_reported_at_load(voc_root: Path):
    image_rel = (voc_root / "list/val.txt").read_text().split()[0]
    (voc_root / "SegmentationClassAug/broken.png").write_bytes(b"\x89PNG truncated")
    ds = _single(voc_root, image_rel, "SegmentationClassAug/broken.png")
    _raises(lambda: ds[0], "broken.png", "label")


def test_label_values_out_of_range(voc_root: Path):
    image_rel = (voc_root / "list/val.txt").read_text().split()[0]
    label = np.zeros((40, 56), np.uint8)
    label[3:9, 4:10] = 30
    label[0, 0] = 255  # ignore is fine
    Image.fromarray(label).save(voc_root / "SegmentationClassAug/bad.png")
    ds = _single(voc_root, image_rel, "SegmentationClassAug/bad.png")
    _raises(lambda: ds[0], "bad.png", "30", "0..20")


def test_image_label_size_mismatch(voc_root: Path):
    image_rel = (voc_root / "list/val.txt").read_text().split()[0]
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(voc_root / "SegmentationClassAug/small.png")
    ds = _single(voc_root, image_rel, "SegmentationClassAug/small.png")
    _raises(lambda: ds[0], "small.png", Path(image_rel).name, "56x40", "30x20")


def test_rgb_label_is_rejected(voc_root: Path):
    image_rel = (voc_root / "list/val.txt").read_text().split()[0]
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(voc_root / "SegmentationClassAug/rgb.png")
    ds = _single(voc_root, image_rel, "SegmentationClassAug/rgb.png")
    _raises(lambda: ds[0], "rgb.png", "single-channel")


def test_greyscale_image_is_converted(voc_root: Path):
    label_rel = (voc_root / "list/val.txt").read_text().split()[1]
    Image.fromarray(np.full((40, 56), 90, np.uint8)).save(voc_root / "JPEGImages/grey.png")
    image, _ = _single(voc_root, "JPEGImages/grey.png", label_rel)[0]
    assert image.shape == (40, 56, 3)
