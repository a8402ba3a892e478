"""APGD, SEA and the worst cases: schedule and halving by hand, APGD against a reference written from
the paper's pseudo-code, early stop, red-eps, determinism, and SEA vs the PGD family on a trained model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from ddcat.attacks import (
    APGD,
    PGD,
    SEA,
    CosPGD,
    SegPGD,
    WorstCase,
    apgd_checkpoints,
    build_attack,
    should_halve,
)
from ddcat.attacks import losses as L
from ddcat.attacks.apgd import red_eps_stages
from ddcat.attacks.projection import ball_bounds
from ddcat.attacks.scoring import Score
from ddcat.errors import DdcatError
from ddcat.metrics import counts_of_confusions, greedy_miou_selection, miou_of_confusions, per_image_confusions
from ddcat.metrics import metrics_from_confusion

K = 4


# small_net: 3x3 conv + BatchNorm (non-trivial running stats) + 1x1 conv; batch: random images with
# exact 0/1 pixels and a row of ignored labels (torch runs on one thread: tests/conftest.py)
from test_attacks import batch, small_net  # noqa: E402


class Recorder(nn.Module):
    """Records every input the attack evaluates (and whether it took a gradient)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        self.grad.append(x.requires_grad)
        return self.inner(x)


# ----------------------------------------------------------------------------- schedule, halving


def test_checkpoints_by_hand():
    # p = 0, .22, .41 (+.19), .57 (+.16), .70 (+.13), .80 (+.10), .87 (+.07), .93 (+.06), .99 (+.06)
    assert apgd_checkpoints(100) == (0, 22, 41, 57, 70, 80, 87, 93, 99)
    # N = 10: ceil(2.2)=3, ceil(4.1)=5, ceil(5.7)=6, 7, 8, ceil(8.7)=9, ceil(9.3)=10, ceil(9.9)=10
    assert apgd_checkpoints(10) == (0, 3, 5, 6, 7, 8, 9, 10)
    # N = 300 (SEA): 66, 123, 171, 210, 240, 261, 279, 297
    assert apgd_checkpoints(300) == (0, 66, 123, 171, 210, 240, 261, 279, 297)
    assert apgd_checkpoints(0) == (0,)
    assert apgd_checkpoints(1) == (0, 1)


@pytest.mark.parametrize("n", [1, 2, 5, 7, 10, 33, 90, 100, 120, 300, 1000])
def test_checkpoints_equal_the_auto_attack_recurrence(n):
    """fra31/auto-attack's formula p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j N)
    (in floats, with a guard against 0.22 * 100 = 22.000000000000004)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0 + 1e-9:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    expected = sorted({math.ceil(q * n - 1e-9) for q in p})
    assert list(apgd_checkpoints(n)) == expected


def test_halving_conditions_by_hand():
    no = torch.tensor([False])

    def halve(increases, interval, best, best_at_last, halved_at_last=False):
        return bool(should_halve(torch.tensor([increases]), interval, torch.tensor([best]), torch.tensor([best_at_last]), torch.tensor([halved_at_last]))[0])

    # condition 1: f = 1.0, 1.2, 1.1, 1.3 over w = 0..3: increases at steps 1 and 3 -> 2 < 0.75 * 3
    assert halve(2, 3, best=1.3, best_at_last=1.0)
    # f = 1.0, 1.1, 1.2, 1.3: 3 increases, not < 2.25; best improved -> no halving
    assert not halve(3, 3, best=1.3, best_at_last=1.0)
    # strict: 3 increases of 4 steps is exactly 0.75 -> condition 1 does not hold
    assert not halve(3, 4, best=2.0, best_at_last=1.0)
    assert halve(2, 4, best=2.0, best_at_last=1.0)
    # condition 2: best unchanged and not halved last time -> halve even with every step increasing
    assert halve(4, 4, best=1.0, best_at_last=1.0)
    assert not halve(4, 4, best=1.0, best_at_last=1.0, halved_at_last=True)
    # per image
    out = should_halve(torch.tensor([2, 3, 3]), 3, torch.tensor([1.3, 1.3, 1.0]), torch.tensor([1.0, 1.0, 1.0]), no.repeat(3))
    assert out.tolist() == [True, False, True]


def test_red_eps_stages():
    assert red_eps_stages(0.1, 100, True) == [(0.2, 30), (0.15000000000000002, 30), (0.1, 40)]
    assert red_eps_stages(0.1, 7, True) == [(0.2, 2), (0.15000000000000002, 2), (0.1, 3)]
    assert red_eps_stages(0.1, 3, True) == [(0.1, 3)]
    assert red_eps_stages(0.1, 9, False) == [(0.1, 9)]


# ----------------------------------------------------------------------------- reference


def paper_checkpoints(n: int) -> list[int]:
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0 + 1e-9:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * n - 1e-9) for q in p})


def reference_apgd(model, images, labels, eps, n_iter, loss, start, track="ce", norm="linf"):
    """Croce & Hein's Algorithm 1 written out, per image in plain Python control flow (the model is
    called on the stacked points of all images). Returns the list of evaluated points (each
    ``(N, C, H, W)``), the iterate with the fewest correct pixels per image, and x_max.
    ``norm="l2"``: their APGD-L2, with the ``cospgd`` package's L2 step and projection."""
    n = images.shape[0]
    lower, upper = ball_bounds(images, eps)
    if norm == "l2":
        from cospgd import functions as cf

    def step(i, eta_i, g_i):  # P(x_i + eta_i * direction(g_i))
        if norm == "l2":
            return cf.step_l2(x[i][None], eps, g_i[None].clone(), images[i][None], eta_i, False)[0]
        return torch.min(torch.max(x[i] + eta_i * g_i.sign(), lower[i]), upper[i])

    def project(i, v):
        if norm == "l2":
            return (images[i] + cf.lp_normalize((v - images[i])[None], 2, eps, decrease_only=True)[0]).clamp(0, 1)
        return torch.min(torch.max(v, lower[i]), upper[i])

    def P(v):
        return torch.min(torch.max(v, lower), upper)

    def evaluate(x, k, grad=True):
        x = x.detach().requires_grad_(True)
        logits = model(x)
        per_image = L.LOSSES[loss](logits, labels, step=min(k + 1, n_iter), total=n_iter)
        g = torch.autograd.grad(per_image.sum(), x)[0] if grad else torch.zeros_like(x)
        f = L.ce(logits.detach(), labels) if track == "ce" else per_image.detach()
        return g, f.tolist(), Score.of(logits.detach(), labels, False)

    W = paper_checkpoints(n_iter)[1:]
    x = start.clone()
    g, f, sc = evaluate(x, 0)
    points = [x.clone()]
    eta = [2 * eps] * n
    x_prev = x.clone()
    f_prev = list(f)
    x_max, g_max, f_max = x.clone(), g.clone(), list(f)
    f_max_last = list(f)
    halved_last = [False] * n
    increases = [0] * n
    last_w = 0
    best_x, best = x.clone(), sc
    for k in range(n_iter):
        new = torch.empty_like(x)
        for i in range(n):
            z = step(i, eta[i], g[i])
            if k == 0:
                new[i] = z
            else:
                new[i] = project(i, x[i] + 0.75 * (z - x[i]) + 0.25 * (x[i] - x_prev[i]))
        x_prev, x = x, new
        g, f, sc = evaluate(x, k + 1, grad=k + 1 < n_iter)
        points.append(x.clone())
        better = sc.better_than(best)
        for i in range(n):
            if better[i]:
                best_x[i], best.bad[i], best.objective[i] = x[i], sc.bad[i], sc.objective[i]
        for i in range(n):
            if f[i] > f_prev[i]:
                increases[i] += 1
            f_prev[i] = f[i]
            if f[i] > f_max[i]:
                x_max[i], g_max[i], f_max[i] = x[i], g[i], f[i]
        if k + 1 in W:
            h = k + 1 - last_w
            for i in range(n):
                cond1 = increases[i] < 0.75 * h
                cond2 = (not halved_last[i]) and f_max[i] <= f_max_last[i]
                halved_last[i] = cond1 or cond2
                if halved_last[i]:
                    eta[i] /= 2
                    x[i], g[i] = x_max[i], g_max[i]
                    f_prev[i] = f_max[i]
                f_max_last[i] = f_max[i]
                increases[i] = 0
            last_w = k + 1
    return points, best_x, x_max


@pytest.mark.parametrize("loss, track, n_iter", [("masked-ce", "ce", 12), ("ce", "loss", 10), ("js", "ce", 25), ("segpgd", "loss", 9)])
def test_apgd_equals_the_paper_reference_iterate_by_iterate(loss, track, n_iter):
    net = small_net(1).eval()
    images, labels = batch(n=3, seed=2)
    eps = 0.05
    points, best_x, _ = reference_apgd(net, images, labels, eps, n_iter, loss, images, track)
    rec = Recorder(net)
    adv = APGD(eps=eps, steps=n_iter, loss=loss, track=track, random_start=False, early_stop=False)(rec, images, labels)
    assert len(rec.inputs) == n_iter + 1 == len(points)
    assert rec.grad == [True] * n_iter + [False]  # the last iterate is only scored
    for j, (ours, ref) in enumerate(zip(rec.inputs, points)):
        assert torch.allclose(ours, ref, atol=1e-6, rtol=0), f"iterate {j}"
    assert torch.allclose(adv, best_x, atol=1e-6, rtol=0)


def test_reference_exercises_both_halvings_and_restarts():
    """The reference comparison above means something only if the step size really changes: on
    this model the step is halved at some checkpoints and not at others."""
    net = small_net(1).eval()
    images, labels = batch(n=3, seed=2)
    points, _, _ = reference_apgd(net, images, labels, 0.05, 25, "js", images)
    steps = [(points[j + 1] - points[j]).abs().amax(dim=(1, 2, 3)) for j in range(len(points) - 1)]
    sizes = {round(float(s), 6) for st in steps for s in st}
    assert len(sizes) > 3  # several step sizes (halvings, momentum, restarts)


def test_red_eps_stages_chain_through_the_best_point():
    net = small_net(2).eval()
    images, labels = batch(n=2, seed=3)
    eps, n = 0.03, 10  # stages (0.06, 3), (0.045, 3), (0.03, 4)
    rec = Recorder(net)
    APGD(eps=eps, steps=n, loss="ce", red_eps=True, early_stop=False, seed=5)(rec, images, labels)
    assert len(rec.inputs) == (3 + 1) + (3 + 1) + (4 + 1)
    gen = torch.Generator().manual_seed(5)
    noise = (torch.rand(images.shape, generator=gen) * 2 - 1) * 0.06
    lo, hi = ball_bounds(images, 0.06)
    start = torch.min(torch.max(images + noise, lo), hi)
    pts1, _, xmax1 = reference_apgd(net, images, labels, 0.06, 3, "ce", start)
    lo2, hi2 = ball_bounds(images, 0.045)
    pts2, _, xmax2 = reference_apgd(net, images, labels, 0.045, 3, "ce", torch.min(torch.max(xmax1, lo2), hi2))
    lo3, hi3 = ball_bounds(images, eps)
    pts3, _, _ = reference_apgd(net, images, labels, eps, 4, "ce", torch.min(torch.max(xmax2, lo3), hi3))
    for j, (ours, ref) in enumerate(zip(rec.inputs, pts1 + pts2 + pts3)):
        assert torch.allclose(ours, ref, atol=1e-6, rtol=0), f"evaluation {j}"


# ----------------------------------------------------------------------------- early stop, restarts


def test_early_stop_drops_fooled_images_and_leaves_the_others_alone():
    net = small_net(3).eval()
    images, labels = batch(n=3, seed=4)
    labels[1] = 255  # no valid pixel: accuracy 0 from the start
    rec = Recorder(net)
    adv = APGD(eps=0.03, steps=6, loss="masked-ce", random_start=False)(rec, images, labels)
    assert [x.shape[0] for x in rec.inputs[:2]] == [3, 2]
    assert torch.equal(adv[1], images[1])
    keep = torch.tensor([0, 2])
    alone = APGD(eps=0.03, steps=6, loss="masked-ce", random_start=False)(net, images[keep], labels[keep])
    assert torch.allclose(adv[keep], alone, atol=1e-6, rtol=0)


def test_early_stop_counts_fewer_passes_on_an_easy_batch():
    net = small_net(3).eval()
    images, labels = batch(n=4, seed=4)
    rec = Recorder(net)
    adv = APGD(eps=0.5, steps=20, loss="masked-ce", random_start=False)(rec, images, labels)
    with torch.no_grad():
        correct = L.hits(net(adv), labels).flatten(1).sum(1)
    sizes = [x.shape[0] for x in rec.inputs]
    assert int((correct == 0).sum()) >= 1  # at eps 0.5 some images are fooled completely ...
    assert sum(sizes) < 4 * 21  # ... and stop costing passes
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] >= int((correct > 0).sum())


def test_restarts_attack_only_unfooled_images_and_never_do_worse():
    net = small_net(4).eval()
    images, labels = batch(n=3, seed=6)
    one = APGD(eps=0.02, steps=5, loss="ce", seed=1)
    three = APGD(eps=0.02, steps=5, loss="ce", seed=1, restarts=3)
    with torch.no_grad():
        s1 = Score.of(net(one(net, images, labels)), labels, False)
        s3 = Score.of(net(three(net, images, labels)), labels, False)
    assert bool((s3.bad <= s1.bad).all())


def test_determinism_and_seed():
    net = small_net(5)
    images, labels = batch(n=2, seed=7)
    a = APGD(eps=0.03, steps=6, red_eps=True, seed=3)
    assert torch.equal(a(net, images, labels), a(net, images, labels))
    assert torch.equal(a(net, images, labels, seed=9), APGD(eps=0.03, steps=6, red_eps=True, seed=9)(net, images, labels))
    assert not torch.equal(a(net, images, labels), a(net, images, labels, seed=4))
    state = torch.get_rng_state()
    SEA(eps=0.03, steps=4)(net, images, labels)
    assert torch.equal(state, torch.get_rng_state())  # no global RNG touched


def test_forward_seam_is_used_for_every_call():
    net = small_net(5).eval()
    images, labels = batch(n=2, seed=7)
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        return net(x)

    adv = APGD(eps=0.03, steps=4, early_stop=False)(nn.Identity(), images, labels, forward=forward)
    assert calls == [2] * 5
    assert torch.equal(adv, APGD(eps=0.03, steps=4, early_stop=False)(net, images, labels))


# ----------------------------------------------------------------------------- values, errors, factory


def test_attacks_are_values():
    a, b = APGD(eps=0.03, steps=10, loss="masked_ce"), APGD(eps=0.03, steps=10, loss="masked-ce")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != APGD(eps=0.03, steps=11, loss="masked-ce")
    with pytest.raises(Exception):
        a.steps = 3  # frozen
    s = SEA(eps=0.03, steps=5, spherical=True, class_counts=torch.tensor([3, 1, 2, 2]))
    assert s == SEA(eps=0.03, steps=5, spherical=True, class_counts=[3, 1, 2, 2]) and hash(s)
    assert [m.loss for m in s.members] == ["masked-ce", "balanced-masked-ce", "js", "masked-spherical"]
    assert all(m.red_eps and m.steps == 5 for m in s.members)
    # class counts reach only the balanced member (the others equal standalone APGD values)
    assert [m.class_counts for m in s.members] == [None, (3.0, 1.0, 2.0, 2.0), None, None]
    assert repr(PGD(0.03, 0.01, 3)).startswith("PGD(eps=0.03, alpha=0.01, steps=3,")
    assert SegPGD(0.03, 0.01, 3) == PGD(0.03, 0.01, 3, loss="segpgd")
    assert CosPGD(0.03, 0.01, 3) == PGD(0.03, 0.01, 3, loss="cospgd")
    assert build_attack("apgd", 0.03, steps=7, loss="js", red_eps=True) == APGD(eps=0.03, steps=7, loss="js", red_eps=True)
    assert build_attack("sea", 4 / 255, steps=9) == SEA(eps=4 / 255, steps=9)
    assert not APGD().starts_at_clean and APGD(random_start=False).starts_at_clean
    assert APGD(random_start=False, red_eps=True).starts_at_clean and not SEA().starts_at_clean


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: APGD(eps=-1), "eps"),
        (lambda: APGD(steps=1.5), "steps"),
        (lambda: APGD(loss="dice"), "masked-ce"),
        (lambda: APGD(track="best"), "track"),
        (lambda: APGD(restarts=0), "restarts"),
        (lambda: APGD(class_counts=[1, -2]), "class_counts"),
        (lambda: SEA(losses="js"), "sequence"),
        (lambda: SEA(losses=()), "at least one"),
        (lambda: build_attack("apgd", 0.03, alpha=0.01, steps=3, momentum=0.9), "momentum"),
        (lambda: greedy_miou_selection(torch.zeros(2, 3, 4)), r"\(A, N, 3, K\)"),
    ],
)
def test_bad_arguments(make, pattern):
    with pytest.raises(DdcatError, match=pattern) as info:
        make()
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- greedy mIoU


def cm(*rows):
    return torch.tensor(rows, dtype=torch.int64)


def test_miou_of_confusions_matches_metrics():
    g = torch.Generator().manual_seed(0)
    mats = torch.randint(0, 5, (6, 3, 3), generator=g)
    mats[0, 2, :] = 0
    mats[0, :, 2] = 0  # a class absent from one matrix
    for m in mats:
        assert float(miou_of_confusions(m)) == pytest.approx(metrics_from_confusion(m)["mIoU"], abs=1e-12)


def test_per_image_confusions():
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 1]]])
    labels = torch.tensor([[[0, 1], [255, 0]], [[2, 1], [0, 255]]])
    out = per_image_confusions(pred, labels, 3)
    assert out[0].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert out[1].tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]


def test_greedy_strictly_improves_on_the_best_single_attack():
    # two classes, two images, two attacks. Image 0 holds class 0 (10 px), image 1 class 1 (10 px).
    # attack A fools image 0 completely, attack B fools image 1 completely.
    a0, a1 = cm([0, 10], [0, 0]), cm([0, 0], [0, 10])  # A: image 0 -> all 1; image 1 intact
    b0, b1 = cm([10, 0], [0, 0]), cm([0, 0], [10, 0])  # B: image 0 intact; image 1 -> all 0
    conf = torch.stack([torch.stack([a0, a1]), torch.stack([b0, b1])])
    single = miou_of_confusions(conf.sum(1))
    # A in total: [[0, 10], [0, 10]]: IoU_0 = 0 / 10, IoU_1 = 10 / (10 + 20 - 10) -> mIoU 0.25; B alike
    assert single.tolist() == pytest.approx([0.25, 0.25])
    choice, value = greedy_miou_selection(counts_of_confusions(conf), rounds=5, seed=0)
    assert choice.tolist() == [0, 1] and value == 0.0  # A on image 0, B on image 1: everything wrong
    assert value < float(single.min())


@pytest.mark.parametrize("seed", range(5))
def test_greedy_never_reports_more_than_the_best_member(seed):
    g = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, 6, (3, 7, 4, 4), generator=g)
    choice, value = greedy_miou_selection(counts_of_confusions(conf), rounds=3, seed=seed)
    assert value <= float(miou_of_confusions(conf.sum(1)).min()) + 1e-12
    chosen = conf[choice, torch.arange(7)].sum(0)
    assert value == pytest.approx(float(miou_of_confusions(chosen)), abs=1e-12)  # the reported value is the choice's


# ----------------------------------------------------------------------------- on a trained model


def _task(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random colour fields under pixel noise; label = the brightest of the 3 smooth
    channels, or 3 where all are dark. The noise keeps margins small, so attacks at 4-8/255 differ."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    labels = smooth.argmax(1)
    labels[smooth.max(1).values < 0.45] = 3
    noise = torch.rand(n, 3, size, size, generator=g) - 0.5
    return (0.35 + 0.3 * smooth + 0.3 * noise).clamp(0, 1), labels


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, K, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for it in range(150):
        x, y = _task(16, 16, it)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    images, labels = _task(12, 16, 10_000)
    return net, images, labels


def _miou(net, adv, labels):
    with torch.no_grad():
        pred = net(adv).argmax(1)
    return float(miou_of_confusions(per_image_confusions(pred, labels, K).sum(0)))


@pytest.mark.parametrize("eps", [4 / 255, 8 / 255])
def test_sea_is_at_least_as_strong_as_the_pgd_family(trained, eps):
    net, images, labels = trained
    with torch.no_grad():
        assert float(L.hits(net(images), labels).float().mean()) > 0.75  # the model has learned the task
    clean = _miou(net, images, labels)
    sea = SEA(eps=eps, steps=20)
    sea_adv = sea(net, images, labels)
    sea_miou = _miou(net, sea_adv, labels)
    others = {
        "pgd": PGD(eps, eps / 4, 7),
        "segpgd": SegPGD(eps, eps / 4, 7),
        "cospgd": CosPGD(eps, eps / 4, 7),
    }
    values = {name: _miou(net, a(net, images, labels), labels) for name, a in others.items()}
    assert sea_miou < clean
    for name, v in values.items():
        assert sea_miou <= v, (name, sea_miou, values)
    # the per-image worst case over SEA's members: never a higher per-image accuracy than any member
    with torch.no_grad():
        chosen = Score.of(net(sea_adv), labels, False)
        for m in sea.members:
            assert bool((chosen.bad <= Score.of(net(m(net, images, labels)), labels, False).bad).all())
    # the greedy mIoU worst case over the members: never above the best member's mIoU
    conf = torch.stack([per_image_confusions(net(m(net, images, labels)).argmax(1), labels, K) for m in sea.members])
    _, greedy = greedy_miou_selection(counts_of_confusions(conf), rounds=5)
    assert greedy <= min(float(miou_of_confusions(c.sum(0))) for c in conf) + 1e-12


def test_worst_case_with_apgd_members_is_per_image_best(trained):
    net, images, labels = trained
    members = (APGD(eps=1 / 255, steps=5, loss="masked-ce"), PGD(1 / 255, 0.5 / 255, 3, loss="js"))
    adv = WorstCase(members)(net, images, labels)
    with torch.no_grad():
        chosen = Score.of(net(adv), labels, False)
        for m in members:
            assert bool((chosen.bad <= Score.of(net(m(net, images, labels)), labels, False).bad).all())


def test_starts_at_clean_tells_where_the_first_forward_is():
    """DDC-AT reads B_clean from the attack's first forward exactly when ``starts_at_clean``."""
    from ddcat.attacks import BIM, FGSM, default_worst_case

    net = small_net(6).eval()
    images, labels = batch(n=2, seed=8)
    attacks = [BIM(0.03, 0.01, 2), FGSM(0.03), PGD(0.03, 0.01, 2), PGD(0.03, 0.01, 2, random_start=False),
               SegPGD(0.03, 0.01, 2), APGD(eps=0.03, steps=3), APGD(eps=0.03, steps=3, random_start=False),
               APGD(eps=0.03, steps=4, red_eps=True, random_start=False), SEA(eps=0.03, steps=3),
               default_worst_case(0.03, 0.01, 2), WorstCase((PGD(0.03, 0.01, 2), BIM(0.03, 0.01, 2)))]
    for attack in attacks:
        rec = Recorder(net)
        attack(rec, images, labels)
        assert torch.equal(rec.inputs[0], images) == attack.starts_at_clean, attack
