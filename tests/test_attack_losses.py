"""The loss table: every loss against its definition, by hand or against the `cospgd` package
(the CosPGD authors' SegPGD / CosPGD scalings, an independent reference)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddcat.attacks import losses as L
from ddcat.errors import DdcatError

K = 4


def logits_and_labels(seed: int = 0, n: int = 2, size: int = 8, ignore: bool = True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, size, size, generator=g) * 2
    labels = torch.randint(0, K, (n, size, size), generator=g)
    if ignore:
        labels[:, -1, :] = 255
        labels[0, :3, :3] = 255
    return logits, labels


def valid_mean(pixel: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    valid = labels != 255
    return torch.stack([pixel[i][valid[i]].sum() / valid[i].sum() for i in range(labels.shape[0])])


def test_every_loss_has_one_signature_and_per_image_values():
    logits, labels = logits_and_labels()
    for name, fn in L.LOSSES.items():
        out = fn(logits, labels, step=2, total=3, class_counts=[1, 2, 3, 4])
        assert out.shape == (2,) and out.dtype == torch.float32, name
        assert torch.equal(fn(logits, torch.full_like(labels, 255)), torch.zeros(2)), name
    assert L.loss_name("Masked_CE") == "masked-ce"
    with pytest.raises(DdcatError, match="unknown attack loss"):
        L.loss_name("dice")
    with pytest.raises(DdcatError, match="untargeted"):
        L.loss_name("segpgd", targeted=True)


def test_ce_and_masked_ce_are_valid_pixel_means():
    logits, labels = logits_and_labels()
    ce = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    correct = (logits.argmax(1) == labels) & (labels != 255)
    missed = (logits.argmax(1) != labels) & (labels != 255)
    assert torch.allclose(L.ce(logits, labels), valid_mean(ce, labels))
    assert torch.allclose(L.masked_ce(logits, labels), valid_mean(ce * correct, labels))
    assert torch.allclose(L.masked_ce(logits, labels, targeted=True), valid_mean(ce * missed, labels))


def test_masked_ce_mask_is_detached():
    logits, labels = logits_and_labels()
    logits.requires_grad_(True)
    (g,) = torch.autograd.grad(L.masked_ce(logits, labels).sum(), logits)
    correct = ((logits.argmax(1) == labels) & (labels != 255)).unsqueeze(1)
    assert torch.equal(g * ~correct, torch.zeros_like(g))  # no gradient where the prediction is wrong


def test_balanced_masked_ce_by_hand():
    # one image, 2 x 2 pixels, labels [[0, 1], [1, 255]], logits favour class 0 everywhere except
    # pixel (1, 0), where class 1 wins: hits at (0, 0) (y=0) and (1, 0) (y=1); (0, 1) is wrong.
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = torch.tensor([[2.0, 2.0], [0.0, 2.0]])
    logits[0, 1] = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([[[0, 1], [1, 255]]])
    ce_hit0 = math.log(1 + math.exp(-2.0))  # -log p_0 at (0, 0)
    ce_hit1 = math.log(1 + math.exp(-1.0))  # -log p_1 at (1, 0)
    counts = [10.0, 40.0]
    expected = (ce_hit0 / 10 + ce_hit1 / 40) / 3  # mean over the 3 valid pixels
    assert L.balanced_masked_ce(logits, labels, class_counts=counts).item() == pytest.approx(expected, rel=1e-6)
    # without counts: the image's own label counts (class 0: 1 pixel, class 1: 2 pixels)
    expected_own = (ce_hit0 / 1 + ce_hit1 / 2) / 3
    assert L.balanced_masked_ce(logits, labels).item() == pytest.approx(expected_own, rel=1e-6)
    # a zero count counts as 1; too few classes is an error
    assert L.balanced_masked_ce(logits, labels, class_counts=[0.0, 40.0]).item() == pytest.approx((ce_hit0 + ce_hit1 / 40) / 3, rel=1e-6)
    with pytest.raises(DdcatError, match="class_counts has 1 classes"):
        L.balanced_masked_ce(logits, labels, class_counts=[3.0])


def test_balanced_weights_without_counts_keep_images_independent():
    _, labels = logits_and_labels(n=3)
    w_all = L.balanced_weights(labels, None)
    for i in range(3):
        assert torch.equal(w_all[i : i + 1], L.balanced_weights(labels[i : i + 1], None))
        for c in range(K):
            sel = labels[i] == c
            if sel.any():
                assert torch.allclose(w_all[i][sel], torch.full_like(w_all[i][sel], 1.0 / int(sel.sum())))


def test_masked_spherical_by_hand():
    logits, labels = logits_and_labels(seed=3)
    u_y = logits.gather(1, labels.clamp(max=K - 1).unsqueeze(1)).squeeze(1)
    correct = (logits.argmax(1) == labels) & (labels != 255)
    pixel = -(u_y / logits.norm(dim=1)) * correct
    assert torch.allclose(L.masked_spherical(logits, labels), valid_mean(pixel, labels))
    one = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    assert L.masked_spherical(one, torch.tensor([[[1]]])).item() == pytest.approx(-0.8)
    assert L.masked_spherical(one, torch.tensor([[[0]]])).item() == 0.0  # wrong pixel: masked


def test_js_matches_definition():
    logits, labels = logits_and_labels(seed=4)
    valid = labels != 255
    p = torch.softmax(logits, 1).double()
    q = F.one_hot(labels.clamp(max=K - 1), K).permute(0, 3, 1, 2).double()
    m = (p + q) / 2

    def kl(a, b):
        return torch.where(a > 0, a * (a / b).log(), torch.zeros_like(a)).sum(1)

    js = (0.5 * kl(p, m) + 0.5 * kl(q, m)) * valid
    assert torch.allclose(L.js(logits, labels).double(), valid_mean(js, labels), atol=1e-6)
    assert bool((L.js(logits, labels) <= math.log(2)).all())


def test_segpgd_weights_by_hand():
    assert L.segpgd_lambda(1, 5) == 0.0
    assert L.segpgd_lambda(5, 5) == pytest.approx(0.4)
    with pytest.raises(DdcatError):
        L.segpgd_lambda(0, 3)
    logits, labels = logits_and_labels(seed=5)
    correct = (logits.argmax(1) == labels) & (labels != 255)
    wrong = (logits.argmax(1) != labels) & (labels != 255)
    assert torch.equal(L.segpgd_weights(logits, labels, 1, 4), correct.float())  # step 1 = masked CE
    assert torch.allclose(L.segpgd(logits, labels, step=1, total=4), L.masked_ce(logits, labels))
    w4 = L.segpgd_weights(logits, labels, 4, 4)
    assert torch.allclose(w4[correct], torch.full_like(w4[correct], 1 - 3 / 8))
    assert torch.allclose(w4[wrong], torch.full_like(w4[wrong], 3 / 8))
    assert bool((w4[labels == 255] == 0).all())


@pytest.mark.parametrize("t, T", [(1, 3), (2, 3), (3, 3), (7, 10)])
def test_segpgd_equals_the_cospgd_package(t, T):
    """``cospgd.functions.segpgd_scale`` takes the 0-based iteration: lambda = iteration / (2 T),
    i.e. ddcat's step t is its ``iteration = t - 1``. It returns the sum over the batch / (H * W);
    ddcat's per-image value is the mean over valid pixels, so per image the two differ by
    (valid pixels) / (H * W)."""
    from cospgd import functions

    logits, labels = logits_and_labels(seed=6)
    ce = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    ours = L.segpgd(logits, labels, step=t, total=T)
    for i in range(labels.shape[0]):
        theirs = functions.segpgd_scale(logits[i : i + 1], labels[i : i + 1], ce[i : i + 1], t - 1, T)
        n_valid = int((labels[i] != 255).sum())
        assert float(ours[i]) * n_valid / 64 == pytest.approx(float(theirs), rel=1e-5)


def test_cospgd_equals_the_cospgd_package():
    from cospgd import functions

    logits, labels = logits_and_labels(seed=7)
    logits.requires_grad_(True)
    ce = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    theirs = functions.cospgd_scale(logits, labels, ce, num_classes=K)  # per pixel, weight detached
    ours_w = L.cospgd_weights(logits, labels)
    assert not ours_w.requires_grad
    assert torch.allclose(ours_w * ce, theirs, atol=1e-6)
    assert torch.allclose(L.cospgd(logits, labels), valid_mean(theirs, labels), atol=1e-6)
    (g,) = torch.autograd.grad(L.cospgd(logits, labels).sum(), logits)
    (g_ref,) = torch.autograd.grad(valid_mean(theirs, labels).sum(), logits)
    assert torch.allclose(g, g_ref, atol=1e-7)


def test_cospgd_weight_is_the_cosine_to_the_one_hot_label():
    logits, labels = logits_and_labels(seed=8)
    valid = labels != 255
    onehot = F.one_hot(labels.clamp(max=K - 1), K).permute(0, 3, 1, 2).float()
    cos = F.cosine_similarity(torch.softmax(logits, 1), onehot, dim=1)
    w = L.cospgd_weights(logits, labels)
    assert torch.allclose(w[valid], cos[valid], atol=1e-6)
    assert bool((w[~valid] == 0).all())
