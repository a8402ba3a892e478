"""ConfusionMatrix and metrics_from_confusion on cases computed by hand."""

from __future__ import annotations

import pytest
import torch

from ddcat.metrics import ConfusionMatrix, metrics_from_confusion

IGN = 255


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def test_hand_computed_matrix_and_metrics_with_ignore():
    # pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,0) and one ignored pixel predicted as 2
    target = t([[0, 0, 1], [1, 2, IGN]])
    pred = t([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    expected = t([
        [1, 1, 0],  # gt 0
        [0, 2, 0],  # gt 1
        [1, 0, 0],  # gt 2
    ])
    assert torch.equal(cm.matrix, expected)
    r = cm.compute()
    # TP = [1, 2, 0]; gt = [2, 2, 1]; pred = [2, 3, 0]; union = [3, 3, 1]
    assert r["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert r["mIoU"] == pytest.approx(1 / 3)
    assert r["mIoU_all"] == pytest.approx(1 / 3)
    assert r["mAcc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert r["aAcc"] == pytest.approx(3 / 5)
    assert r["num_pixels"] == 5  # the ignored pixel is not counted


def test_all_ignored_pixels_add_nothing():
    cm = ConfusionMatrix(3)
    cm.update(t([0, 1, 2]), t([IGN, IGN, IGN]))
    assert int(cm.matrix.sum()) == 0
    r = cm.compute()
    assert r["mIoU"] == 0.0 and r["aAcc"] == 0.0 and r["per_class_iou"] == [None, None, None]


def test_custom_ignore_index():
    cm = ConfusionMatrix(2, ignore_index=1)
    cm.update(t([0, 0, 1]), t([0, 1, 1]))  # gt 1 is ignored here
    assert torch.equal(cm.matrix, t([[1, 0], [0, 0]]))


def test_empty_union_classes_miou_vs_miou_all():
    # K = 4; class 2 and 3 never appear in gt or prediction
    target = t([0, 0, 1, 1])
    pred = t([0, 1, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    r = cm.compute()
    # IoU_0 = 1 / (2 + 1 - 1) = 1/2 ; IoU_1 = 2 / (2 + 3 - 2) = 2/3
    assert r["per_class_iou"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert r["per_class_iou"][2] is None and r["per_class_iou"][3] is None
    assert r["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # 7/12: over the two present classes
    assert r["mIoU_all"] == pytest.approx((1 / 2 + 2 / 3) / 4)  # 7/24: absent classes count 0
    assert r["mAcc"] == pytest.approx((1 / 2 + 1) / 2)  # recall over classes with ground truth
    assert r["aAcc"] == pytest.approx(3 / 4)


def test_class_only_predicted_counts_zero_in_miou_but_not_in_macc():
    # class 2 is predicted once but never in the ground truth: union 1, IoU 0
    cm = ConfusionMatrix(3)
    cm.update(t([0, 2]), t([0, 0]))
    r = cm.compute()
    assert r["per_class_iou"] == [pytest.approx(0.5), None, 0.0]
    assert r["mIoU"] == pytest.approx(0.25)
    assert r["mIoU_all"] == pytest.approx(0.5 / 3)
    assert r["mAcc"] == pytest.approx(0.5)  # only class 0 has ground truth
    assert r["aAcc"] == pytest.approx(0.5)


def test_perfect_prediction():
    target = t([[0, 1, 2], [2, 1, IGN]])
    cm = ConfusionMatrix(3)
    cm.update(target.clone().masked_fill(target == IGN, 0), target)
    r = cm.compute()
    assert r["mIoU"] == 1.0 and r["mIoU_all"] == 1.0 and r["mAcc"] == 1.0 and r["aAcc"] == 1.0
    assert torch.equal(cm.matrix, torch.diag(t([1, 2, 2])))


def test_metrics_from_confusion_directly():
    m = t([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    r = metrics_from_confusion(m)
    # IoU_0 = 5 / (6 + 7 - 5) = 5/8 ; IoU_1 = 3 / (5 + 4 - 3) = 1/2 ; class 2 empty
    assert r["per_class_iou"] == [pytest.approx(5 / 8), pytest.approx(1 / 2), None]
    assert r["mIoU"] == pytest.approx((5 / 8 + 1 / 2) / 2)
    assert r["mIoU_all"] == pytest.approx((5 / 8 + 1 / 2) / 3)
    assert r["mAcc"] == pytest.approx((5 / 6 + 3 / 5) / 2)
    assert r["aAcc"] == pytest.approx(8 / 11)
    assert r["num_pixels"] == 11


def test_accumulation_equals_one_update_on_concatenation():
    g = torch.Generator().manual_seed(0)
    k = 5
    preds = [torch.randint(0, k, (2, 7, 9), generator=g) for _ in range(4)]
    targets = []
    for p in preds:
        tg = torch.randint(0, k, p.shape, generator=g)
        tg[torch.rand(p.shape, generator=g) < 0.2] = IGN
        targets.append(tg)
    acc = ConfusionMatrix(k)
    for p, tg in zip(preds, targets):
        acc.update(p, tg)
    once = ConfusionMatrix(k)
    once.update(torch.cat(preds), torch.cat(targets))
    assert torch.equal(acc.matrix, once.matrix)
    assert acc.compute() == once.compute()
    n_valid = sum(int((tg != IGN).sum()) for tg in targets)
    assert int(acc.matrix.sum()) == n_valid > 0
    # merge() of two partial matrices equals the whole too
    a, b = ConfusionMatrix(k), ConfusionMatrix(k)
    for i, (p, tg) in enumerate(zip(preds, targets)):
        (a if i % 2 else b).update(p, tg)
    a.merge(b)
    assert torch.equal(a.matrix, once.matrix)


def test_matrix_entries_match_a_pixel_count():
    g = torch.Generator().manual_seed(1)
    k = 3
    pred = torch.randint(0, k, (40,), generator=g)
    target = torch.randint(0, k, (40,), generator=g)
    cm = ConfusionMatrix(k)
    cm.update(pred, target)
    for i in range(k):
        for j in range(k):
            assert int(cm.matrix[i, j]) == int(((target == i) & (pred == j)).sum())


def test_shape_mismatch_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        cm.update(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64))
    assert int(cm.matrix.sum()) == 0


def test_target_out_of_range_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(t([0, 1]), t([0, 3]))
    with pytest.raises(ValueError, match="outside"):
        cm.update(t([0, 1]), t([0, -1]))


# ----------------------------------------------------------------------------- greedy mIoU: its start

# Two classes, two images of three labelled pixels, three attacks (rows ground truth, columns
# prediction). Labels: image 0 = [1, 1, 0], image 1 = [1, 0, 0].
#   attack 0: image 0 -> [1, 0, 1], image 1 -> [1, 0, 1]
#   attack 1: image 0 -> [0, 0, 0], image 1 -> [1, 0, 0] (intact)
#   attack 2: image 0 -> [1, 0, 1], image 1 -> [0, 0, 0]
GREEDY_TRAP = t([
    [[[0, 1], [1, 1]], [[1, 1], [0, 1]]],
    [[[1, 0], [2, 0]], [[2, 0], [0, 1]]],
    [[[0, 1], [1, 1]], [[2, 0], [1, 0]]],
])


def test_greedy_search_is_local_and_a_start_reaches_the_selection_it_misses():
    """Hand-worked: attack 0 summed over the images is [[1, 2], [1, 2]]: TP (1, 2), gt (3, 3), pred
    (2, 4): IoU 1/4 and 2/5, mIoU 0.325; attack 1: TP (3, 1), pred (5, 1): IoU 3/5, 1/3, mIoU 7/15; attack 2:
    TP (2, 1), pred (4, 2): IoU 2/5, 1/4, mIoU 0.325. From attack 0 (the first lowest) no single image
    switch lowers the mIoU ((1, 0): 0.325, (2, 0): 0.325, (0, 1): 0.5, (0, 2): 0.325), so the search
    stops there; the selection (attack 1 on image 0, attack 2 on image 1) predicts class 0 everywhere:
    TP (3, 0), gt (3, 3), pred (6, 0): IoU 1/2 and 0, mIoU 0.25. Given as a start it is kept."""
    from ddcat.metrics import counts_of_confusions, greedy_miou_selection, miou_of_counts

    counts = counts_of_confusions(GREEDY_TRAP)
    assert miou_of_counts(counts.sum(1)).tolist() == pytest.approx([0.325, 7 / 15, 0.325])
    for seed in range(4):  # any visiting order: no single switch helps
        choice, value = greedy_miou_selection(counts, rounds=10, seed=seed)
        assert choice.tolist() == [0, 0] and value == pytest.approx(0.325)
        choice, value = greedy_miou_selection(counts, rounds=10, seed=seed, starts=[t([0, 0]), t([1, 2])])
        assert choice.tolist() == [1, 2] and value == pytest.approx(0.25)
    # the subset {2, 1} (as SEA over its own members) reaches 0.25 from its best single attack
    sub, value = greedy_miou_selection(counts[[2, 1]], rounds=10, seed=0)
    assert sub.tolist() == [1, 0] and value == pytest.approx(0.25)
    # a start no lower than the best single attack does not replace it (ties: the single attack)
    choice, value = greedy_miou_selection(counts, rounds=10, seed=0, starts=[t([2, 2])])
    assert choice.tolist() == [0, 0] and value == pytest.approx(0.325)


def test_greedy_start_is_checked():
    from ddcat.errors import DdcatError
    from ddcat.metrics import counts_of_confusions, greedy_miou_selection

    counts = counts_of_confusions(GREEDY_TRAP)
    for bad in (t([0, 3]), t([0]), t([-1, 0]), torch.tensor([0.0, 1.0]), torch.tensor([True, False])):
        with pytest.raises(DdcatError, match="start 0 must be 2 attack indices in \\[0, 3\\)"):
            greedy_miou_selection(counts, starts=[bad])
