"""ADE20K's SceneParsing layout: a fixture tree written here; 0 -> 255, c -> c - 1, 150 classes."""

import numpy as np
import pytest
from PIL import Image

from ddcat.config import load_config
from ddcat.data import build_dataset
from ddcat.data.ade20k import reduce_zero_label
from ddcat.errors import DdcatError


def make_tree(root, split="validation", n=2, size=(6, 4)):
    rng = np.random.default_rng(0)
    labels = []
    for i in range(n):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / split / f"ADE_{i}.jpg")
        label = rng.integers(0, 151, (size[1], size[0]), dtype=np.uint8)
        label[0, 0], label[0, 1], label[0, 2] = 0, 1, 150
        Image.fromarray(label).save(root / "annotations" / split / f"ADE_{i}.png")
        labels.append(label)
    return labels


def test_reduce_zero_label_by_hand():
    assert reduce_zero_label(np.array([[0, 1, 2, 150]], np.uint8)).tolist() == [[255, 0, 1, 149]]


def test_reads_the_scene_parsing_layout(tmp_path):
    labels = make_tree(tmp_path, "validation")
    make_tree(tmp_path, "training", n=3)
    cfg = load_config(None, ["data.name=ade20k", f"data.root={tmp_path}", "data.num_classes=150"])
    val = build_dataset(cfg, "val")
    assert len(val) == 2 and len(build_dataset(cfg, "train")) == 3
    image, label = val.raw(0)
    assert image.shape == (4, 6, 3) and label.shape == (4, 6)
    assert label[0, 0] == 255 and label[0, 1] == 0 and label[0, 2] == 149
    expected = labels[0].astype(int) - 1
    expected[labels[0] == 0] = 255
    assert (label == expected).all()
    x, y = val[1]
    assert tuple(x.shape) == (3, 4, 6) and int(y.max()) <= 255


def test_ade20k_mistakes_name_the_file(tmp_path):
    make_tree(tmp_path, "validation")
    bad = tmp_path / "annotations" / "validation" / "ADE_1.png"
    Image.fromarray(np.full((4, 6), 151, np.uint8)).save(bad)
    cfg = load_config(None, ["data.name=ade20k", f"data.root={tmp_path}", "data.num_classes=150"])
    with pytest.raises(DdcatError, match="ADE_1.png holds value"):
        build_dataset(cfg, "val").raw(1)
    bad.unlink()
    with pytest.raises(DdcatError, match="annotation not found.*ADE_1"):
        build_dataset(cfg, "val")
    with pytest.raises(DdcatError, match="150 classes"):
        build_dataset(load_config(None, ["data.name=ade20k", f"data.root={tmp_path}"]), "val")
    with pytest.raises(DdcatError, match="ade20k folder not found"):
        build_dataset(load_config(None, ["data.name=ade20k", f"data.root={tmp_path / 'x'}", "data.num_classes=150"]), "val")


def test_the_data_check_allows_ade20k_raw_values_and_names_a_bad_file(tmp_path, monkeypatch):
    """check_dataset (what train / eval run before the first write) applies ADE20K's own statement of
    its raw values, 0..150, not the 0..149-or-255 rule of list files: 150 and 0 pass, 151 or 255 is
    refused naming the file."""
    from ddcat.data.check import check_config_data, check_dataset, check_pairs

    monkeypatch.setenv("DDCAT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ade"
    labels = make_tree(root, "validation")
    assert all((lab == 150).any() and (lab == 0).any() for lab in labels)
    cfg = load_config(None, ["data.name=ade20k", f"data.root={root}", "data.num_classes=150"])
    dataset = build_dataset(cfg, "val")
    assert dataset.raw_label_values() == (151, 0)
    with pytest.raises(DdcatError, match="holds value"):  # the list-file rule would refuse the valid 150
        check_pairs(dataset.items, 150, 255, progress=False)
    assert check_config_data(cfg, "val", progress=False) == {"pairs": 2, "checked": 2, "cached": 0}
    bad = root / "annotations" / "validation" / "ADE_1.png"
    for value in (151, 255):
        label = labels[1].copy()
        label[2, 3] = value
        Image.fromarray(label).save(bad)
        with pytest.raises(DdcatError) as err:
            check_dataset(build_dataset(cfg, "val"), progress=False)
        assert str(err.value) == f"label {bad} holds value(s) {value}: expected 0..150"


def test_class_names_are_scene_parsings_150_in_label_order(tmp_path):
    from ddcat.data.ade20k import ADE20K_CLASSES

    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    # spot checks against objectInfo150 (raw value = index + 1): 1 wall, 3 sky, 13 person, 21 car, 150 flag
    assert [ADE20K_CLASSES[v - 1] for v in (1, 2, 3, 13, 21, 77, 150)] == ["wall", "building", "sky", "person", "car", "boat", "flag"]
    make_tree(tmp_path, "validation", n=1)
    cfg = load_config(None, ["data.name=ade20k", f"data.root={tmp_path}", "data.num_classes=150"])
    assert build_dataset(cfg, "val").class_names == list(ADE20K_CLASSES)
