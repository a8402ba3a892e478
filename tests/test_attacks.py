"""Tests of ddcat.attacks: exact bounds, eq. 1-2 by hand, loss weights, model state, cost, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ddcat.attacks import (
    ATTACK_NAMES,
    BIM,
    FGSM,
    PGD,
    CosPGD,
    SegPGD,
    WorstCase,
    build_attack,
    default_worst_case,
    project,
)
from ddcat.attacks import losses as L
from ddcat.attacks.registry import entry
from ddcat.attacks.scoring import Score
from ddcat.errors import DdcatError

K = 4


def small_net(seed: int = 0, k: int = K) -> nn.Module:
    """3x3 conv + BatchNorm + 1x1 conv: a tiny segmentation 'network' (same-size logits)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, k, 1))
    with torch.no_grad():  # non-trivial running stats, so eval mode differs from train mode
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    return net


def pointwise_net(k: int = K, seed: int = 0) -> nn.Module:
    """A 1x1 conv: every logit pixel sees exactly its own input pixel."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, k, 1)


def batch(n: int = 2, size: int = 8, seed: int = 0, k: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    images[:, :, 0, 0] = 0.0  # exact bounds are where clipping matters
    images[:, :, 0, 1] = 1.0
    labels = torch.randint(0, k, (n, size, size), generator=g)
    labels[:, -1, :] = 255
    return images, labels


def all_attacks(eps: float = 0.03, alpha: float = 0.01, steps: int = 2):
    return [build_attack(name, eps, alpha, steps) for name in ATTACK_NAMES if name != "sea"] + [
        build_attack("sea", eps, alpha, steps=4, spherical=True),
        BIM(eps, alpha, steps, targeted=True),
        PGD(eps, alpha, steps, restarts=2, loss="masked_ce", targeted=True),
    ]


class Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inputs.append(x.detach().clone())
        return self.inner(x)


# ----------------------------------------------------------------------------- eq. 1 and eq. 2


def test_fgsm_equals_bim_with_one_step_of_size_eps():
    net = small_net()
    images, labels = batch()
    for eps in (0.0, 0.01, 0.03, 0.25):
        a = FGSM(eps)(net, images, labels)
        b = BIM(eps=eps, alpha=eps, steps=1)(net, images, labels) if eps > 0 else images
        assert torch.equal(a, b)
    assert torch.equal(FGSM(0.0)(net, images, labels), images)


def test_bim_matches_eq2_by_hand():
    # logits: z0 = x_r - x_g + 0.5 x_b, z1 = 0. d CE / dx = (p0 - [y == 0]) * (1, -1, 0.5), and
    # 0 < p0 < 1, so sign(grad) = -(1, -1, 1) for y = 0 and +(1, -1, 1) for y = 1, at every step.
    net = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, 0.5])
        net.bias.zero_()
    images = torch.tensor([0.5, 0.99, 0.01, 0.2]).view(1, 1, 1, 4).repeat(1, 3, 2, 1)
    labels = torch.tensor([[[0, 1, 0, 255], [1, 0, 1, 0]]])
    eps, alpha, steps = 0.03, 0.02, 3
    sign_pattern = torch.tensor([1.0, -1.0, 1.0]).view(1, 3, 1, 1)
    per_label = torch.where(labels == 0, -1.0, torch.where(labels == 1, 1.0, 0.0)).unsqueeze(1)
    s = sign_pattern * per_label
    x = images.clone()
    for _ in range(steps):
        x = torch.clamp(torch.clamp(x + alpha * s, images - eps, images + eps), 0.0, 1.0)
    adv = BIM(eps, alpha, steps)(net, images, labels)
    assert torch.allclose(adv, x, atol=1e-7, rtol=0)
    # spot checks of the clips: 3 steps of 0.02 stop at eps; 0.99 + 0.02 stops at 1; 0.01 - 0.02 at 0
    assert adv[0, 0, 0, 0].item() == pytest.approx(0.5 - 0.03, abs=1e-7)  # y=0: red goes down
    assert adv[0, 1, 0, 0].item() == pytest.approx(0.5 + 0.03, abs=1e-7)
    assert adv[0, 0, 0, 1].item() == 1.0  # y=1: red goes up from 0.99, clipped to 1
    assert adv[0, 0, 0, 2].item() == 0.0  # y=0: red goes down from 0.01, clipped to 0
    assert torch.equal(adv[..., 0, 3], images[..., 0, 3])  # ignored pixel: no gradient, no change


def test_bim_one_step_is_eq1_sign_of_loss_gradient():
    net = small_net()
    images, labels = batch()
    x = images.clone().requires_grad_(True)
    net.eval()
    grad = torch.autograd.grad(F.cross_entropy(net(x), labels, ignore_index=255), x)[0]
    expected = (images + 0.02 * grad.sign()).clamp(0, 1)
    adv = BIM(eps=0.02, alpha=0.02, steps=1)(net, images, labels)
    assert torch.allclose(adv, expected, atol=1e-7, rtol=0)


# ----------------------------------------------------------------------------- exact bounds


def test_project_bounds_are_exact():
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4096, generator=g)
    x0[:3] = torch.tensor([0.0, 1.0, 0.5])
    for eps in (0.0, 1e-7, 0.03, 8 / 255, 0.1, 1 / 3):
        x = x0 + (torch.rand(4096, generator=g) * 2 - 1) * 3 * eps
        r = project(x, x0, eps)
        assert bool(((r - x0).abs() <= eps).all())
        assert bool(((r.double() - x0.double()).abs() <= eps).all())
        assert bool((r >= 0).all()) and bool((r <= 1).all())
        inside = ((x - x0).abs() <= eps * 0.999) & (x >= 0) & (x <= 1)
        assert torch.equal(r[inside], x[inside])  # points inside the ball stay where they are
    assert torch.equal(project(x0 + 5, x0, 0.0), x0)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(ATTACK_NAMES + ("bim-targeted", "pgd-targeted")),
    eps=st.one_of(st.sampled_from([0.0, 0.03, 8 / 255, 0.1]), st.floats(0.0, 0.2, allow_nan=False)),
    alpha=st.floats(1e-4, 0.2, allow_nan=False),
    steps=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_every_attack_stays_in_the_eps_ball_and_in_0_1(name, eps, alpha, steps, seed):
    net = small_net(seed % 3)
    images, labels = batch(n=2, size=8, seed=seed)
    if name.endswith("-targeted"):
        attack = build_attack(name.split("-")[0], eps, alpha, steps, targeted=True)
    else:
        attack = build_attack(name, eps, alpha, steps, seed=seed) if name != "fgsm" else FGSM(eps)
    adv = attack(net, images, labels)
    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert not adv.requires_grad
    assert bool(((adv - images).abs() <= eps).all())
    assert bool(((adv.double() - images.double()).abs() <= eps).all())
    assert bool((adv >= 0).all()) and bool((adv <= 1).all())
    if steps == 0 and "steps" in entry(name.removesuffix("-targeted")).parameters():  # fgsm, fgsm-rs: one step, always
        assert torch.equal(adv, images)


# ----------------------------------------------------------------------------- ignored pixels


LOSS_FNS = {
    "ce": lambda z, y: L.ce(z, y).sum(),
    "segpgd-t1": lambda z, y: L.segpgd(z, y, step=1, total=3).sum(),
    "segpgd-t3": lambda z, y: L.segpgd(z, y, step=3, total=3).sum(),
    "cospgd": lambda z, y: L.cospgd(z, y).sum(),
    "masked_ce": lambda z, y: L.masked_ce(z, y).sum(),
    "masked_ce-targeted": lambda z, y: L.masked_ce(z, y, targeted=True).sum(),
    "js": lambda z, y: L.js(z, y).sum(),
    "balanced_masked_ce": lambda z, y: L.balanced_masked_ce(z, y, class_counts=[5, 50, 500, 1]).sum(),
    "balanced_masked_ce-own-counts": lambda z, y: L.balanced_masked_ce(z, y).sum(),
    "masked_spherical": lambda z, y: L.masked_spherical(z, y).sum(),
}


@pytest.mark.parametrize("loss_name", sorted(LOSS_FNS))
def test_ignored_pixels_get_no_gradient(loss_name):
    net = pointwise_net()
    images, labels = batch(n=2, size=8)
    labels[0, :4, :4] = 255
    x = images.clone().requires_grad_(True)
    loss = LOSS_FNS[loss_name](net(x), labels)
    (grad,) = torch.autograd.grad(loss, x)
    ignored = (labels == 255).unsqueeze(1).expand_as(grad)
    assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))
    assert bool((grad[~ignored] != 0).any()) or "masked" in loss_name
    all_ignored = torch.full_like(labels, 255)
    assert LOSS_FNS[loss_name](net(images), all_ignored).item() == 0.0


def test_all_ignored_labels_leave_images_unchanged():
    net = pointwise_net()
    images, _ = batch()
    labels = torch.full((2, 8, 8), 255, dtype=torch.long)
    assert torch.equal(BIM(0.03, 0.01, 3)(net, images, labels), images)
    assert torch.equal(FGSM(0.03)(net, images, labels), images)
    assert torch.equal(PGD(0.03, 0.01, 3, random_start=False)(net, images, labels), images)


def test_images_in_a_batch_do_not_interact():
    net = small_net().eval()
    images, labels = batch(n=3)
    for name, fn in LOSS_FNS.items():
        x = images.clone().requires_grad_(True)
        (g_all,) = torch.autograd.grad(fn(net(x), labels), x)
        x1 = images[1:2].clone().requires_grad_(True)
        (g_one,) = torch.autograd.grad(fn(net(x1), labels[1:2]), x1)
        assert torch.allclose(g_all[1:2], g_one, atol=1e-6, rtol=1e-4), name


# (the loss table's definitions are tested in tests/test_attack_losses.py)


# ----------------------------------------------------------------------------- best iterate


@pytest.mark.parametrize("attack", [PGD(0.05, 0.02, 4, restarts=2, seed=1), SegPGD(0.05, 0.02, 4),
                                    PGD(0.05, 0.02, 3, loss="masked_ce", targeted=True, restarts=2)])
def test_pgd_returns_the_best_iterate(attack):
    net = Counting(small_net(2))
    images, labels = batch(n=3, seed=4)
    adv = attack(net, images, labels)
    # every forward evaluates one iterate (the last forward of each restart scores its last one)
    assert len(net.inputs) == attack.restarts * (attack.steps + 1)
    inner = net.inner.eval()
    with torch.no_grad():
        best = Score.of(inner(adv), labels, attack.targeted)
        for i, x in enumerate(net.inputs):
            sc = Score.of(inner(x), labels, attack.targeted)
            assert not bool(sc.better_than(best).any()), f"iterate {i} beats the returned one"
    # and it is one of the iterates, per image
    for n in range(adv.shape[0]):
        assert any(torch.equal(adv[n], x[n]) for x in net.inputs)


def test_pgd_is_never_worse_than_the_last_bim_iterate():
    net = small_net(1)
    images, labels = batch(n=4, seed=2)
    pgd = PGD(0.05, 0.02, 4, random_start=False, loss="ce")(net, images, labels)
    last = BIM(0.05, 0.02, 4)(net, images, labels)  # same iterates, no tracking
    net.eval()
    with torch.no_grad():
        s_pgd, s_last = Score.of(net(pgd), labels, False), Score.of(net(last), labels, False)
    assert not bool(s_last.better_than(s_pgd).any())
    assert bool((s_pgd.bad <= s_last.bad).all())


def test_worst_case_picks_the_best_attack_per_image():
    net = small_net(3)
    images, labels = batch(n=4, seed=5)
    attacks = [BIM(0.03, 0.01, 2), PGD(0.03, 0.01, 2, seed=2), CosPGD(0.03, 0.01, 2)]
    adv = WorstCase(attacks)(net, images, labels)
    net.eval()
    with torch.no_grad():
        chosen = Score.of(net(adv), labels, False)
        for a in attacks:
            sc = Score.of(net(a(net, images, labels)), labels, False)
            assert bool((chosen.bad <= sc.bad).all())
    w = default_worst_case(0.03, 0.01, 2)
    assert [type(a).__name__ for a in w.attacks] == ["BIM", "PGD", "PGD", "PGD", "PGD", "PGD"]
    assert [getattr(a, "loss", None) for a in w.attacks] == [None, "ce", "segpgd", "cospgd", "masked-ce", "js"]


# ----------------------------------------------------------------------------- model state


def _snapshot(net: nn.Module):
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    grads = {k: (None if p.grad is None else p.grad.clone()) for k, p in net.named_parameters()}
    modes = [m.training for m in net.modules()]
    return state, grads, modes


@pytest.mark.parametrize("train_mode", [True, False])
def test_attacks_change_no_parameter_grad_buffer_or_mode(train_mode):
    net = small_net()
    net.train(train_mode)
    net[3].eval()  # a mixed state must come back as it was
    for i, p in enumerate(net.parameters()):
        if i % 2 == 0:
            p.grad = torch.full_like(p, 0.5)
    images, labels = batch()
    before = _snapshot(net)
    for attack in all_attacks():
        attack(net, images, labels)
        state, grads, modes = _snapshot(net)
        assert modes == before[2], attack
        for k in state:
            assert torch.equal(state[k], before[0][k]), (attack, k)
        for k in grads:
            if before[1][k] is None:
                assert grads[k] is None, (attack, k)
            else:
                assert torch.equal(grads[k], before[1][k]), (attack, k)


def test_mode_is_restored_on_errors():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            assert not self.training
            return x[:, :, :4]  # wrong spatial size

    net = Broken().train()
    images, labels = batch()
    with pytest.raises(DdcatError, match=r"\(2, 3, 4, 8\)"):
        BIM()(net, images, labels)
    assert net.training and net.bn.training


def test_attacks_work_under_no_grad_and_run_fp32_under_autocast():
    dtypes = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def forward(self, x):
            out = self.net(x)
            dtypes.append(out.dtype)
            return out

    images, labels = batch()
    net = Probe()
    with torch.no_grad():
        a = BIM(0.03, 0.01, 2)(net, images, labels)
    assert not torch.equal(a, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = BIM(0.03, 0.01, 2)(net, images, labels)
    assert torch.equal(a, b)
    assert set(dtypes) == {torch.float32}


# ----------------------------------------------------------------------------- determinism, cost


def test_determinism_with_seed():
    net = small_net()
    images, labels = batch()
    for make in (lambda s: PGD(0.03, 0.01, 2, restarts=2, seed=s), lambda s: SegPGD(0.03, 0.01, 2, seed=s),
                 lambda s: default_worst_case(0.03, 0.01, 2, seed=s)):
        a, b = make(7)(net, images, labels), make(7)(net, images, labels)
        assert torch.equal(a, b)
    # the seed matters (the random start)
    a = PGD(0.03, 0.01, 2, seed=7)(net, images, labels)
    assert not torch.equal(a, PGD(0.03, 0.01, 2, seed=8)(net, images, labels))


def test_forward_counts():
    images, labels = batch()
    for steps in (0, 1, 3):
        net = Counting(small_net())
        BIM(0.03, 0.01, steps)(net, images, labels)
        assert net.calls == steps
        for restarts in (1, 2):
            net = Counting(small_net())
            PGD(0.03, 0.01, steps, restarts=restarts)(net, images, labels)
            assert net.calls <= steps * restarts + restarts and (steps > 0 or net.calls == 0)
    net = Counting(small_net())
    FGSM(0.03)(net, images, labels)
    assert net.calls == 1


def test_targeted_bim_moves_towards_the_target():
    net = small_net(4).eval()
    images, _ = batch(n=2, seed=6)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    adv = BIM(0.1, 0.02, 6, targeted=True)(net, images, target)
    with torch.no_grad():
        assert L.ce(net(adv), target).sum() < L.ce(net(images), target).sum()
        assert (net(adv).argmax(1) == 0).sum() >= (net(images).argmax(1) == 0).sum()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: BIM(eps=-0.1), "eps"),
        (lambda: PGD(eps=float("nan")), "eps"),
        (lambda: BIM(steps=-1), "steps"),
        (lambda: PGD(steps=2.5), "steps"),
        (lambda: BIM(alpha=0.0), "alpha"),
        (lambda: PGD(alpha=-0.01), "alpha"),
        (lambda: SegPGD(alpha=0), "alpha"),
        (lambda: FGSM(-1), "eps"),
        (lambda: PGD(restarts=0), "restarts"),
        (lambda: PGD(loss="dice"), "ce, masked-ce, balanced-masked-ce, js, masked-spherical, segpgd, cospgd"),
        (lambda: PGD(loss="segpgd", targeted=True), "untargeted"),
        (lambda: build_attack("deepfool", 0.03, 0.01, 3), "valid names: fgsm, fgsm-rs, bim, pgd, segpgd, cospgd, masked-ce, js, worst, apgd"),
        (lambda: build_attack("bim", 0.03, 0.01, 3, restarts=2), "restarts"),
        (lambda: build_attack("pgd", -0.03, 0.01, 3), "eps"),
    ],
)
def test_bad_hyper_parameters(make, pattern):
    with pytest.raises(DdcatError, match=pattern) as info:
        make()
    assert "\n" not in str(info.value)


def test_bad_inputs():
    net = small_net()
    images, labels = batch()
    with pytest.raises(DdcatError, match=r"\(2, 8, 7\).*\(2, 4, 8, 8\)|\(2, 8, 7\).*\(2, K, 8, 8\)"):
        BIM()(net, images, labels[:, :, :7])
    with pytest.raises(DdcatError, match="model output shape"):
        BIM()(nn.Conv2d(3, K, 3), images, labels)  # no padding: 6x6 logits
    with pytest.raises(DdcatError, match=r"model output shape \(2, 4\)"):
        PGD()(nn.Sequential(nn.Conv2d(3, K, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), images, labels)
    bad = labels.clone()
    bad[0, 0, 0] = K  # neither in [0, K) nor 255
    with pytest.raises(DdcatError, match=r"\[0, 4\) or 255"):
        BIM()(net, images, bad)
    bad[0, 0, 0] = -1
    with pytest.raises(DdcatError, match="label values"):
        default_worst_case(steps=1)(net, images, bad)
    with pytest.raises(DdcatError, match="labels must be an integer"):
        BIM()(net, images, labels.float())
    with pytest.raises(DdcatError, match=r"\[0, 1\]"):
        BIM()(net, images * 255, labels)
    for err in (DdcatError,):
        with pytest.raises(err) as info:
            BIM()(net, images, labels[:, :, :7])
        assert "\n" not in str(info.value)


def test_bim_sweep_equals_separate_attacks_and_costs_the_longest_only():
    from ddcat.attacks import BIM

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1))
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    images = torch.rand(2, 3, 12, 12)
    labels = torch.randint(0, 4, (2, 12, 12))
    swept = BIM(0.03, 0.01, 1).sweep(model, images, labels, [1, 3, 5])
    assert len(calls) == 5
    for n in (1, 3, 5):
        assert torch.equal(swept[n], BIM(0.03, 0.01, n)(model, images, labels))
    assert set(swept) == {1, 3, 5}


def test_engine_worst_case_reusing_sub_attacks_equals_worst_case_run():
    from ddcat.attacks import BIM, PGD, default_worst_case

    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    images = torch.rand(3, 3, 12, 12)
    labels = torch.randint(0, 4, (3, 12, 12))
    worst = default_worst_case(0.03, 0.01, 3)
    known = {BIM(0.03, 0.01, 3): BIM(0.03, 0.01, 3)(model, images, labels), PGD(0.03, 0.01, 3): PGD(0.03, 0.01, 3)(model, images, labels)}
    assert torch.equal(worst.run(model, images, labels, known=known)[0], worst(model, images, labels))
