"""SAT / DDC-AT math on cases small enough to check by hand (eqs. 3-6, Alg. 2, Sec. 6.4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ddcat.config import CHOICES
from ddcat.errors import DdcatError
from ddcat.training.losses import (
    DIVISIONS,
    Division,
    boundary_property,
    combine,
    cross_entropy,
    division_of,
    mask_labels,
    mask_loss,
    routed_cross_entropy,
    routing,
)
from ddcat.training.base import split_sizes
from ddcat.training.optim import poly_lr

B_CLEAN = torch.tensor([[[0, 1], [2, 2]]])
B_ADV = torch.tensor([[[0, 2], [2, 1]]])
BOUNDARY = torch.tensor([[[0, 1], [0, 1]]])


def test_boundary_property_marks_changed_predictions():
    assert torch.equal(boundary_property(B_CLEAN, B_ADV), BOUNDARY)


@pytest.mark.parametrize(
    "division, want_clean, want_adv",
    [
        ("ddcat", BOUNDARY, torch.zeros_like(BOUNDARY)),  # Alg. 2 lines 6-7
        ("ddcat-m", BOUNDARY, BOUNDARY),  # clean and adversarial boundary pixels -> f_a
        ("ddcat-n", torch.zeros_like(BOUNDARY), BOUNDARY),  # only adversarial boundary pixels -> f_a
    ],
)
def test_mask_labels_per_division(division, want_clean, want_adv):
    m_clean, m_adv = mask_labels(division, B_CLEAN, B_ADV)
    assert torch.equal(m_clean, want_clean)
    assert torch.equal(m_adv, want_adv)


def test_mask_labels_unknown_division():
    with pytest.raises(DdcatError, match=r"unknown DDC-AT division 'ddcat-x'; valid: ddcat, ddcat-m, ddcat-n"):
        mask_labels("ddcat-x", B_CLEAN, B_ADV)
    with pytest.raises(DdcatError, match="unknown DDC-AT division"):
        division_of(["ddcat"])
    with pytest.raises(DdcatError, match="sends no pixel to f_a"):
        Division("none", clean=False, adversarial=False)


@pytest.mark.parametrize(
    "name, attacked, boundary",
    [
        # a batch of m = 5 images, the first n_c = 2 stay clean (mask_targets' table)
        ("ddcat", (0, 5), (0, 2)),  # all m attacked; B_adv needed for the clean rows (M_adv = 0)
        ("ddcat-m", (0, 5), (0, 5)),  # all m attacked; every row's boundary property is read
        ("ddcat-n", (2, 5), (2, 5)),  # only the adversarial part is attacked and read (M_clean = 0)
    ],
)
def test_division_rows(name, attacked, boundary):
    d = division_of(name)
    assert d is DIVISIONS[name] and division_of(d) is d and d.name == name
    assert d.attacked_rows(2, 5) == slice(*attacked)
    assert d.boundary_rows(2, 5) == slice(*boundary)


def test_divisions_are_training_methods():
    assert list(DIVISIONS) == ["ddcat", "ddcat-m", "ddcat-n"]
    assert set(DIVISIONS) <= set(CHOICES["train.method"])
    # a Division value gives the same labels as its name
    for name, d in DIVISIONS.items():
        by_name, by_value = mask_labels(name, B_CLEAN, B_ADV), d.mask_labels(B_CLEAN, B_ADV)
        assert all(torch.equal(a, b) for a, b in zip(by_name, by_value))


def test_routing_is_argmax_of_mask_head():
    # channel 0 (main) = (2, -1), channel 1 (aux) = (1, 0.5): pixel 0 -> main, pixel 1 -> aux
    mask_logits = torch.tensor([[[[2.0, -1.0]], [[1.0, 0.5]]]])  # (1, 2, 1, 2)
    assert routing(mask_logits).tolist() == [[[0, 1]]]


def test_combined_output_takes_aux_where_p_is_one():
    o_n = torch.full((1, 3, 2, 2), 1.0)
    o_a = torch.full((1, 3, 2, 2), 7.0)
    p = torch.tensor([[[1, 0], [0, 1]]])
    o = combine(o_n, o_a, p)
    assert o[0, :, 0, 0].tolist() == [7.0] * 3
    assert o[0, :, 0, 1].tolist() == [1.0] * 3
    assert o[0, :, 1, 0].tolist() == [1.0] * 3
    assert o[0, :, 1, 1].tolist() == [7.0] * 3


def _two_pixel_logits():
    # pixel 0: logits (0, ln 3) label 1 -> CE = ln(4/3); pixel 1: logits (0, 0) label 0 -> CE = ln 2
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[1, 0]]])
    return logits, labels, [math.log(4 / 3), math.log(2)]


def test_routed_cross_entropy_matches_eq3_eq4_by_hand():
    logits, labels, ce = _two_pixel_logits()
    p = torch.tensor([[[1, 0]]])
    q = 1 - p
    # E over the two valid pixels: L_n sees only pixel 1, L_a only pixel 0
    assert routed_cross_entropy(logits, labels, q).item() == pytest.approx(ce[1] / 2, rel=1e-6)
    assert routed_cross_entropy(logits, labels, p).item() == pytest.approx(ce[0] / 2, rel=1e-6)


def test_main_plus_aux_loss_equals_plain_ce_when_heads_agree():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    labels = torch.randint(0, 4, (2, 5, 5))
    labels[0, 0, :3] = 255
    p = torch.randint(0, 2, (2, 5, 5))
    total = routed_cross_entropy(logits, labels, 1 - p) + routed_cross_entropy(logits, labels, p)
    assert total.item() == pytest.approx(F.cross_entropy(logits, labels, ignore_index=255).item(), rel=1e-5)
    assert cross_entropy(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels, ignore_index=255).item(), rel=1e-5)


def test_routed_cross_entropy_ignores_void_pixels():
    logits, labels, ce = _two_pixel_logits()
    labels = torch.tensor([[[1, 255]]])
    ones = torch.ones_like(labels)
    assert routed_cross_entropy(logits, labels, ones).item() == pytest.approx(ce[0], rel=1e-6)


def test_mask_loss_ignores_void_pixels_unless_asked_not_to():
    # mask logits favour "aux" (1) on both pixels: CE(label 1) = ln(1 + e^-2), CE(label 0) = ln(1 + e^2)
    mask_logits = torch.tensor([[[[0.0, 0.0]], [[2.0, 2.0]]]])
    target = torch.tensor([[[1, 0]]])
    labels = torch.tensor([[[3, 255]]])
    ce1, ce0 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    assert mask_loss(mask_logits, target, labels, ignore_void=True).item() == pytest.approx(ce1, rel=1e-6)
    assert mask_loss(mask_logits, target, labels, ignore_void=False).item() == pytest.approx((ce1 + ce0) / 2, rel=1e-6)


@pytest.mark.parametrize("m, f, want", [(8, 0.5, (4, 4)), (5, 0.5, (2, 3)), (8, 1.0, (0, 8)), (8, 0.0, (8, 0)), (6, 0.25, (4, 2))])
def test_split_sizes_follow_alg3(m, f, want):
    assert split_sizes(m, f) == want


def test_poly_lr():
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
