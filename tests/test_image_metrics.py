"""The per-image metrics of issue 16 section 5 on hand-worked cases: class counts, image-wise mIoU,
connected components (against scipy.ndimage.label), size-resolved recall; and the one IoU formula
shared by the dataset metrics and the greedy worst case (issue 21 section 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddcat.metrics import (
    SIZE_BIN_NAMES,
    connected_components,
    counts_of_confusions,
    imagewise_miou,
    metrics_from_confusion,
    miou_of_counts,
    per_image_confusions,
    per_image_counts,
    size_bin_counts,
    size_bins,
    size_recall,
)

I = 255  # ignore


def test_per_image_counts_by_hand():
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 0], [2, 0]]])
    labels = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, I]]])
    c = per_image_counts(pred, labels, 3)
    # image 0: TP (1, 2, 0), ground truth (2, 2, 0), prediction (1, 3, 0)
    assert c[0].tolist() == [[1, 2, 0], [2, 2, 0], [1, 3, 0]]
    # image 1 (the ignored pixel counts nowhere, also not as a prediction): TP (0, 0, 2), gt (0, 0, 3), pred (1, 0, 2)
    assert c[1].tolist() == [[0, 0, 2], [0, 0, 3], [1, 0, 2]]
    assert torch.equal(c, counts_of_confusions(per_image_confusions(pred, labels, 3)))


def test_imagewise_miou_by_hand():
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 0], [2, 0]], [[0, 0], [0, 0]]])
    labels = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, I]], [[I, I], [I, I]]])
    c = per_image_counts(pred, labels, 3)
    # image 0: IoU_0 = 1/2, IoU_1 = 2/3 (class 2 has an empty union): 7/12
    # image 1: IoU_2 = 2/3, IoU_0 = 0/1 (predicted, absent from the labels: a non-empty union): 1/3
    # image 2: no labelled pixel, does not count
    assert imagewise_miou(c) == pytest.approx((7 / 12 + 1 / 3) / 2, abs=1e-12)
    assert miou_of_counts(c[:2]).tolist() == pytest.approx([7 / 12, 1 / 3])
    # the dataset mIoU of the same pixels differs: IoU = (1/3, 2/3, 2/3) -> 5/9
    assert metrics_from_confusion(per_image_confusions(pred, labels, 3).sum(0))["mIoU"] == pytest.approx(5 / 9, abs=1e-12)
    assert imagewise_miou(c[2:]) is None


def test_one_iou_formula_for_dataset_and_batched_miou():
    g = torch.Generator().manual_seed(0)
    mats = torch.randint(0, 5, (6, 4, 4), generator=g)
    mats[0, 3, :] = 0
    mats[0, :, 3] = 0
    batched = miou_of_counts(counts_of_confusions(mats))
    for m, value in zip(mats, batched.tolist()):
        assert metrics_from_confusion(m)["mIoU"] == value  # exactly: the same function


def _scipy_partition_equal(labels: np.ndarray, ours: np.ndarray) -> bool:
    from scipy import ndimage

    for k in np.unique(labels[labels != I]):
        ref, _ = ndimage.label(labels == k, structure=np.ones((3, 3), dtype=int))
        mask = labels == k
        pairs = set(zip(ref[mask].tolist(), ours[mask].tolist()))
        if not len(pairs) == len(np.unique(ref[mask])) == len(np.unique(ours[mask])):
            return False
    return bool((ours[labels == I] == -1).all())


@pytest.mark.parametrize("seed", range(6))
def test_connected_components_equal_scipy_label_8_connectivity(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (3, 13, 17), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.15] = I
    comp = connected_components(labels)
    for i in range(3):
        assert _scipy_partition_equal(labels[i].numpy(), comp[i].numpy())
    # each component is named by its first pixel (row-major)
    flat = comp[0].reshape(-1)
    for p in range(flat.numel()):
        if flat[p] >= 0:
            assert flat[p] <= p and flat[flat[p]] == flat[p]


def test_connected_components_follow_diagonals_and_long_snakes():
    snake = torch.zeros(1, 9, 9, dtype=torch.int64)
    snake[0, ::2, :] = 1
    snake[0, 1::4, -1] = 1
    snake[0, 3::4, 0] = 1  # one boustrophedon path of class 1
    diag = torch.eye(6, dtype=torch.int64).unsqueeze(0) * 2  # class 2 on the diagonal: one 8-connected object
    for labels in (snake, diag):
        comp = connected_components(labels)
        assert _scipy_partition_equal(labels[0].numpy(), comp[0].numpy())
    assert len(torch.unique(connected_components(diag)[0][diag[0] == 2])) == 1


def _objects():
    """20 x 20 labels (one ignored pixel: 399 labelled): a 5-pixel diagonal chain of class 1 (1.25 %:
    one 8-connected object; with 4-connectivity it would be five 0.25 % objects), a 3 x 3 block of
    class 1 (2.26 %), a 5 x 8 block of class 2 (10.0 %), a single pixel of class 1 (0.25 %), and the
    class-0 background (344 pixels, 86 %)."""
    y = torch.zeros(20, 20, dtype=torch.int64)
    for i in range(5):
        y[i, i] = 1
    y[10:13, 0:3] = 1
    y[14:19, 10:18] = 2
    y[8, 15] = 1
    y[19, 0] = I
    pred = y.clone()
    pred[y == I] = 0
    for i in range(5):
        pred[i, i] = 0  # the chain: all wrong
    pred[10, 0:3] = 0  # the 3 x 3 block: one row of three wrong
    pred[8, 15] = 2  # the single pixel: wrong
    return y.unsqueeze(0), pred.unsqueeze(0)


def test_size_bins_by_hand():
    labels, _ = _objects()
    bins = size_bins(labels)[0]
    assert bins[0, 0] == bins[4, 4] == 1  # chain: 5 / 399 = 1.25 %
    assert bins[11, 1] == 1  # 3 x 3 block: 9 / 399
    assert bins[15, 12] == 2  # 40 / 399 = 10.0 %
    assert bins[8, 15] == 0  # 1 / 399
    assert bins[5, 10] == 3  # background
    assert bins[19, 0] == -1  # ignored
    edges = torch.zeros(1, 10, 10, dtype=torch.int64)
    edges[0, 0, 0] = 1  # exactly 1 % of 100 labelled pixels: bins are [lo, hi), so 1-5 %
    edges[0, 5:, 5:] = 2  # 25 px: > 20 %
    edges[0, 9, 0:5] = 3  # 5 px: 5 % exactly -> 5-20 %
    b = size_bins(edges)[0]
    assert (b[0, 0], b[9, 0], b[7, 7]) == (1, 2, 3)


def test_size_recall_by_hand():
    labels, pred = _objects()
    counts = size_bin_counts(size_bins(labels), pred, labels)
    # <1 %: the single pixel (0 of 1); 1-5 %: chain + block (6 of 14); 5-20 %: 40 of 40; > 20 %: 344 of 344
    assert counts.tolist() == [[0, 6, 40, 344], [1, 14, 40, 344]]
    rec = size_recall(counts)
    assert [r["bin"] for r in rec] == list(SIZE_BIN_NAMES) == ["<1%", "1-5%", "5-20%", ">20%"]
    assert [r["recall"] for r in rec] == pytest.approx([0.0, 6 / 14, 1.0, 1.0])
    assert size_recall(torch.zeros(2, 4, dtype=torch.int64))[0] == {"bin": "<1%", "recall": None, "pixels": 0}
