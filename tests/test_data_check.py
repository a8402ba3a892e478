"""The data check before the first write (ddcat.data.check, issue 20 section 1): each kind of bad
file found by its header, end marker or label values, the cache, and the train command leaving no
run folder behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddcat.cli import main
from ddcat.data import make_voc_fixture
from ddcat.data.check import cache_path, check_pair, check_pairs, truncated
from ddcat.data.listfile import load_pair, read_list
from ddcat.errors import DdcatError

from conftest import voc_sets


@pytest.fixture
def voc(tmp_path) -> Path:
    return make_voc_fixture(tmp_path / "VOC", n_train=4, n_val=2, size=32, seed=0)


def first_pair(root: Path) -> tuple[Path, Path]:
    return read_list(root, root / "list" / "train_aug.txt")[0]


def test_a_good_tree_passes_and_agrees_with_the_loader(voc):
    pairs = read_list(voc, voc / "list" / "train_aug.txt")
    for image, label in pairs:
        check_pair(image, label, 21)
        load_pair(image, label, 21)  # the loader accepts what the check accepts
    assert check_pairs(pairs, 21, progress=False) == {"pairs": 4, "checked": 4, "cached": 0}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD = {  # name -> (how the file is spoiled, phrase of the error)
    "image-garbage": (lambda img, lab: img.write_bytes(b"not an image at all"), "cannot read image"),
    "image-truncated": (lambda img, lab: _truncate(img), "truncated"),
    "label-truncated": (lambda img, lab: _truncate(lab), "truncated"),
    "label-rgb": (lambda img, lab: Image.new("RGB", (32, 32)).save(lab), "got mode RGB"),
    "label-16-bit-values": (lambda img, lab: Image.fromarray(np.full((32, 32), 300, np.uint16)).save(lab), "holds value(s) 300"),
    "label-other-size": (lambda img, lab: Image.new("L", (31, 32)).save(lab), "but label"),
    "label-value-out-of-range": (lambda img, lab: Image.fromarray(np.full((32, 32), 40, np.uint8)).save(lab), "holds value(s) 40"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_bad_file_is_named(name, voc):
    spoil, phrase = BAD[name]
    image, label = first_pair(voc)
    spoil(image, label)
    with pytest.raises(DdcatError) as err:
        check_pair(image, label, 21)
    message = str(err.value)
    assert phrase.lower() in message.lower() and (str(image) in message or str(label) in message), message


def test_decompression_bomb_is_refused_from_its_header(voc, monkeypatch):
    image, label = first_pair(voc)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # a 32x32 image is a "bomb" of 1024 pixels (PIL raises above 2 x 500)
    with pytest.raises(DdcatError, match="cannot read image .*decompression bomb"):
        check_pair(image, label, 21)


@pytest.mark.parametrize("workers", [1, 4])
def test_bomb_between_the_limit_and_twice_it_by_explicit_comparison(voc, monkeypatch, workers):
    """Between MAX_IMAGE_PIXELS and twice it PIL only warns: the check compares width x height itself
    (thread safe: no warning filter inside the pool) and no warning escapes check_pairs."""
    import warnings

    pairs = read_list(voc, voc / "list" / "train_aug.txt") * 3  # 12 pairs: the thread pool when workers > 1
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1024 pixels: above the limit, below twice it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DdcatError) as err:
            check_pairs(pairs, 21, progress=False, workers=workers)
    assert str(err.value).startswith(f"cannot read image {pairs[0][0]}: 32x32 = 1024 pixels exceeds the limit of 1000 pixels")
    assert "decompression bomb" in str(err.value) and not caught
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024)  # exactly at the limit: accepted
    assert check_pairs(pairs, 21, progress=False, workers=workers)["checked"] == 12


def test_end_marker_detection(tmp_path):
    png, jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    Image.new("L", (8, 8)).save(png)
    Image.new("RGB", (8, 8)).save(jpg)
    assert not truncated(png, "PNG") and not truncated(jpg, "JPEG")
    for path, fmt in ((png, "PNG"), (jpg, "JPEG")):
        path.write_bytes(path.read_bytes()[:-12])
        assert truncated(path, fmt)


def test_large_labels_get_the_header_check_only(voc, monkeypatch):
    from ddcat.data import check

    image, label = first_pair(voc)
    Image.fromarray(np.full((32, 32), 40, np.uint8)).save(label)
    monkeypatch.setattr(check, "DECODE_LABEL_PIXELS", 32 * 32 - 1)
    check_pair(image, label, 21)  # values not read: the loader still catches them
    with pytest.raises(DdcatError, match="holds value"):
        load_pair(image, label, 21)


def test_cache_skips_unchanged_files_and_rechecks_changed_ones(voc, tmp_path):
    pairs = read_list(voc, voc / "list" / "train_aug.txt")
    cache = tmp_path / "cache.json"
    assert check_pairs(pairs, 21, cache=cache, progress=False)["checked"] == 4
    assert check_pairs(pairs, 21, cache=cache, progress=False) == {"pairs": 4, "checked": 0, "cached": 4}
    assert check_pairs(pairs, 22, cache=cache, progress=False)["checked"] == 4  # another K: checked again
    image, label = pairs[2]
    Image.fromarray(np.full((32, 32), 40, np.uint8)).save(label)
    st = os.stat(label)
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DdcatError, match=str(label)):
        check_pairs(pairs, 21, cache=cache, progress=False)
    with pytest.raises(DdcatError, match=str(label)):  # a failure is never cached
        check_pairs(pairs, 21, cache=cache, progress=False)


def test_first_failure_in_list_order_with_a_count_of_the_rest(voc):
    pairs = read_list(voc, voc / "list" / "train_aug.txt")
    for _, label in pairs[1:3]:
        label.write_bytes(b"junk")
    with pytest.raises(DdcatError) as err:
        check_pairs(pairs, 21, progress=False, workers=4)
    assert str(pairs[1][1]) in str(err.value) and "(and 1 more file(s) fail the check)" in str(err.value)


def test_cache_location(voc, monkeypatch, tmp_path):
    """$DDCAT_CACHE when set; else beside the data (<root>/.ddcat-check-cache.json) when the root is
    writable; else ~/.cache/ddcat (XDG_CACHE_HOME) for a read-only tree."""
    from ddcat.data.check import check_dataset
    from ddcat.data.listfile import ListDataset

    monkeypatch.setenv("DDCAT_CACHE", str(tmp_path / "c"))
    path = cache_path(voc)
    assert path.parent == tmp_path / "c" / "data-check" and voc not in path.parents
    monkeypatch.delenv("DDCAT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path(voc) == voc.resolve() / ".ddcat-check-cache.json"
    dataset = ListDataset(voc, "list/train_aug.txt", 21)
    assert check_dataset(dataset, progress=False)["checked"] == 4
    assert (voc / ".ddcat-check-cache.json").is_file()
    assert check_dataset(dataset, progress=False) == {"pairs": 4, "checked": 0, "cached": 4}
    assert oct((voc / ".ddcat-check-cache.json").stat().st_mode & 0o777) == oct(0o644)
    if os.geteuid() != 0:  # root writes anywhere: a read-only tree cannot be made here
        os.chmod(voc, 0o555)
        try:
            assert cache_path(voc) == tmp_path / "xdg" / "ddcat" / "data-check" / cache_path(voc).name
        finally:
            os.chmod(voc, 0o755)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only tree, whoever runs the test
    assert cache_path(voc).parent == tmp_path / "xdg" / "ddcat" / "data-check"


def test_train_over_a_corrupt_label_creates_no_run_folder(tmp_path, capsys):
    """The issue's 'done when': corrupt labels in the training list, no run folder. The labels are
    two the second iteration loads (not the first), with a checkpoint after every iteration: without
    the check, iteration 1 would write last.pt and the folder would stay (shown at the end), and the
    loader's message would lack the check's own phrase (the count of the other failing files)."""
    from ddcat.config import DEFAULTS
    from ddcat.training.sampling import ResumableBatchSampler

    root = make_voc_fixture(tmp_path / "VOC", n_train=8, n_val=2, size=32, seed=0)
    pairs = read_list(root, root / "list" / "train_aug.txt")
    sampler = ResumableBatchSampler(len(pairs), 4, DEFAULTS["seed"], 0, 2)
    first = {i for _, i in sampler.keys(0)}
    second = sorted(i for _, i in sampler.keys(1) if i not in first)
    for i in second[:2]:
        Image.fromarray(np.full((32, 32), 40, np.uint8)).save(pairs[i][1])
    label = pairs[second[0]][1]  # the first failing pair in list order
    out = tmp_path / "run"
    sets = [*voc_sets(root, iters=2), "--set", "train.save_every=1", "--set", "data.workers=0"]
    rc = main(["train", "--no-progress", "--out", str(out), *sets])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(label) in err and "(and 1 more file(s) fail the check)" in err, err
    assert not out.exists()
    rc = main(["train", "--no-progress", "--out", str(out), *sets, "--set", "data.check=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds value(s) 40" in err and "fail the check" not in err, err  # without the check: found by the loader...
    assert (out / "last.pt").is_file() and (out / "config.yaml").is_file()  # ...after iteration 1 was saved


def test_check_dataset_applies_the_datasets_own_statement_of_raw_values(voc, monkeypatch, tmp_path):
    """check_dataset asks the dataset which raw label values are allowed (raw_label_values); a list
    dataset allows 0..K-1 and 255, which is what it read before."""
    from ddcat.data.check import check_dataset
    from ddcat.data.listfile import ListDataset

    monkeypatch.setenv("DDCAT_CACHE", str(tmp_path / "cache"))
    dataset = ListDataset(voc, "list/train_aug.txt", 21, name="voc")
    assert dataset.raw_label_values() == (21, 255)
    assert check_dataset(dataset, progress=False)["pairs"] == 4
    values = np.concatenate([np.asarray(Image.open(label)).ravel() for _, label in dataset.items])
    assert values[values != 255].max() >= 2  # the fixture holds classes the narrow rule below refuses

    class Narrow(ListDataset):
        def raw_label_values(self):
            return 2, 255  # only 0, 1 and 255

    with pytest.raises(DdcatError, match=r"holds value\(s\) .*expected 0\.\.1 or 255 \(ignore\)"):
        check_dataset(Narrow(voc, "list/train_aug.txt", 21, name="voc"), progress=False)
