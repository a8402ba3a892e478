"""Beyond SEA (issue 16 §2-3): the L2 threat model, PAdam, APGD with CE / SegPGD's loss / masked
spherical / Tsallis, each against its equation on a hand-sized case or an independent reference
(the ``cospgd`` package's L2 functions, ``torch.optim.Adam``), and ``ddcat eval --norm l2``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ddcat.attacks import APGD, BIM, PGD, SEA, PAdam, adam_step, build_attack, project_l2
from ddcat.attacks import registry
from ddcat.attacks import losses as L
from ddcat.attacks.norms import Ball, check_norm, l2_norms, l2_normalize
from ddcat.attacks.scoring import Score
from ddcat.errors import DdcatError

from test_apgd import Recorder  # noqa: E402
from test_attacks import K, batch, pointwise_net, small_net  # noqa: E402

cospgd = pytest.importorskip("cospgd")


def l2_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).flatten(1).norm(dim=1)


# ----------------------------------------------------------------------------- L2: projection, step


def test_l2_projection_by_hand():
    x0 = torch.full((1, 1, 1, 2), 0.5)
    x = x0 + torch.tensor([0.3, 0.4]).view(1, 1, 1, 2)  # ||delta|| = 0.5
    r = project_l2(x, x0, 0.25)  # scaled by 0.5: delta (0.15, 0.2)
    assert torch.allclose(r.flatten(), torch.tensor([0.65, 0.7]), atol=1e-7)
    assert torch.equal(project_l2(x, x0, 1.0), x)  # inside the ball: unchanged
    # projection first, then the box: delta (0.6, 0.8) at x0 = 0.5 becomes (0.3, 0.4) -> (0.8, 0.9)
    # for eps 0.5, and the box clips (0.5 + 0.6, 0.5 + 0.8) only when the ball does not
    x = x0 + torch.tensor([0.6, 0.8]).view(1, 1, 1, 2)
    assert torch.allclose(project_l2(x, x0, 0.5).flatten(), torch.tensor([0.8, 0.9]), atol=1e-7)
    assert torch.allclose(project_l2(x, x0, 2.0).flatten(), torch.tensor([1.0, 1.0]))


def test_l2_projection_and_step_equal_the_cospgd_package():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 8, 8, generator=g)
    x = (x0 + 0.3 * torch.randn(3, 3, 8, 8, generator=g)).clamp(0, 1)
    grad = torch.randn(3, 3, 8, 8, generator=g)
    eps = 0.5
    ours = project_l2(x, x0, eps)
    ref = (x0 + cospgd.functions.lp_normalize(x - x0, p=2, epsilon=eps, decrease_only=True)).clamp(0, 1)
    assert torch.allclose(ours, ref, atol=1e-6)
    for targeted in (False, True):
        ours = Ball("l2", x0, eps).step(x, grad, 0.1, descend=targeted)
        ref = cospgd.functions.step_l2(x, eps, grad.clone(), x0, 0.1, targeted)
        assert torch.allclose(ours, ref, atol=1e-6)
    unit = l2_normalize(grad)
    assert torch.allclose(unit, cospgd.functions.lp_normalize(grad, p=2, epsilon=1.0), atol=1e-7)
    assert torch.allclose(l2_norms(unit), torch.ones(3, dtype=torch.float64), atol=1e-6)


def test_l2_projection_is_exact_in_float64():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x0 = torch.rand(4, 3, 16, 16, generator=g)
        x = (x0 + torch.randn(4, 3, 16, 16, generator=g)).clamp(0, 1)
        for eps in (0.25, 0.5, 1.0 / 3.0):
            r = project_l2(x, x0, eps)
            assert (l2_dist(r, x0) <= eps).all()
            assert r.min() >= 0 and r.max() <= 1


def test_norm_names_and_the_unsupported_norm_error():
    assert check_norm("L2", "pgd") == "l2" and check_norm("Linf", "pgd") == "linf" and check_norm("inf", "pgd") == "linf"
    with pytest.raises(DdcatError, match="unknown norm 'l1' for attack 'pgd'"):
        check_norm("l1", "pgd")
    with pytest.raises(DdcatError, match=r"^attack 'dag' does not support norm 'l2' \(supported: linf\)$"):
        check_norm("l2", "dag", ("linf",))
    with pytest.raises(DdcatError, match="unknown norm"):
        PGD(norm="l3")


class LinfOnly(BIM):
    norms = ("linf",)


def test_registry_refuses_l2_for_an_attack_without_it(monkeypatch):
    # an attack of one threat model: l2 is a one-line error naming it and the norm, linf passes
    def without_norm(eps=0.03, alpha=0.01, steps=1, precision="fp32"):  # an attack with no `norm` option
        return LinfOnly(eps, alpha, steps, precision=precision)

    for build in (None, without_norm):
        monkeypatch.setitem(registry.REGISTRY, "linf-only", registry.Entry("linf-only", LinfOnly, build=build))
        assert isinstance(build_attack("linf-only", norm="linf"), LinfOnly)
        with pytest.raises(DdcatError, match=r"^attack 'linf-only' does not support norm 'l2' \(supported: linf\)$"):
            build_attack("linf-only", norm="l2")
    for name in ("pgd", "bim", "fgsm", "worst", "apgd", "sea", "tsallis", "padam-ce", "padam-cos", "apgd-segpgd"):
        assert build_attack(name, 0.5, steps=2, norm="l2").norm == "l2", name
    # ddcat eval checks it before anything runs (the plan), with the same one-line message
    from ddcat.evaluation import settings

    monkeypatch.setattr(settings, "EVAL_ATTACKS", (*settings.EVAL_ATTACKS, "linf-only"))
    settings.AttackPlan(("pgd", "linf-only"), (1,), norm="linf")
    with pytest.raises(DdcatError, match=r"^attack 'linf-only' does not support norm 'l2' \(supported: linf\)$"):
        settings.AttackPlan(("pgd", "linf-only"), (1,), norm="l2")


L2_ATTACKS = [
    lambda eps: BIM(eps, 0.1, 3, norm="l2"),
    lambda eps: build_attack("fgsm", eps, norm="l2"),
    lambda eps: PGD(eps, 0.1, 3, restarts=2, norm="l2"),
    lambda eps: build_attack("segpgd", eps, 0.1, 3, norm="l2"),
    lambda eps: build_attack("cospgd", eps, 0.1, 3, norm="l2"),
    lambda eps: build_attack("worst", eps, 0.1, 2, norm="l2"),
    lambda eps: APGD(eps, steps=6, norm="l2", restarts=2),
    lambda eps: APGD(eps, steps=10, norm="l2", red_eps=True, loss="tsallis"),
    lambda eps: SEA(eps, steps=4, norm="l2", spherical=True),
    lambda eps: PAdam(eps, steps=4, norm="l2"),
    lambda eps: build_attack("padam-cos", eps, steps=3, norm="l2"),
    lambda eps: build_attack("ensemble", eps, steps=2, norm="l2", seed=1),  # every L2 member, per-image worst case
]


@pytest.mark.parametrize("make", L2_ATTACKS)
def test_l2_attacks_stay_in_the_l2_ball_and_the_box_and_are_deterministic(make):
    images, labels = batch(n=2, size=8)
    net = small_net()
    eps = 0.5
    attack = make(eps)
    assert attack.norm == "l2"
    adv = attack(net, images, labels, seed=3)
    assert (l2_dist(adv, images) <= eps).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert (l2_dist(adv, images) > 0).all()  # it moved
    assert torch.equal(adv, attack(net, images, labels, seed=3))


def test_pgd_l2_iterates_follow_the_normalised_gradient():
    # no random start: x_1 = clip(P_2(x_0 + alpha g / ||g||)), checked with the cospgd package's step
    images, labels = batch(n=2, size=8)
    rec = Recorder(small_net())
    PGD(0.5, 0.2, 2, random_start=False, norm="l2")(rec, images, labels)
    x0, x1 = rec.inputs[0], rec.inputs[1]
    xg = x0.clone().requires_grad_(True)
    grad = torch.autograd.grad(L.ce(rec.inner.eval()(xg), labels).sum(), xg)[0]
    assert torch.allclose(x1, cospgd.functions.step_l2(x0, 0.5, grad, images, 0.2, False), atol=1e-6)


def test_apgd_l2_first_step_is_two_eps_along_the_normalised_gradient():
    images, labels = batch(n=2, size=8)
    rec = Recorder(small_net())
    eps = 0.25
    APGD(eps, steps=3, random_start=False, norm="l2", early_stop=False)(rec, images, labels)
    x0, x1 = rec.inputs[0], rec.inputs[1]
    assert torch.equal(x0, images)
    xg = x0.clone().requires_grad_(True)
    grad = torch.autograd.grad(L.ce(rec.inner.eval()(xg), labels).sum(), xg)[0]
    ref = cospgd.functions.step_l2(x0, eps, grad, images, 2 * eps, False)  # eta_0 = 2 eps
    assert torch.allclose(x1, ref, atol=1e-6)
    # 2 eps along the unit direction from the centre reaches the sphere (before the box)
    before_box = images + eps * l2_normalize(grad)
    inside = (before_box >= 0) & (before_box <= 1)
    assert torch.allclose(x1[inside], before_box[inside], atol=1e-6)


@pytest.mark.parametrize("loss, track, n_iter", [("ce", "ce", 12), ("masked-ce", "ce", 10), ("tsallis", "ce", 9)])
def test_apgd_l2_equals_the_reference_with_cospgd_steps_iterate_by_iterate(loss, track, n_iter):
    from test_apgd import reference_apgd

    net = small_net(1).eval()
    images, labels = batch(n=3, seed=2)
    eps = 0.3
    points, best_x, _ = reference_apgd(net, images, labels, eps, n_iter, loss, images, track, norm="l2")
    rec = Recorder(net)
    adv = APGD(eps, n_iter, loss, track, random_start=False, early_stop=False, norm="l2")(rec, images, labels)
    assert len(rec.inputs) == n_iter + 1 == len(points)
    for j, (ours, ref) in enumerate(zip(rec.inputs, points)):
        assert torch.allclose(ours, ref, atol=1e-5, rtol=0), f"iterate {j}"
    assert torch.allclose(adv, best_x, atol=1e-5, rtol=0)
    sizes = {round(float(d), 4) for j in range(n_iter) for d in l2_dist(points[j + 1], points[j])}
    assert len(sizes) > 3  # the step size really changes (halvings, momentum)


def test_l2_random_start_is_at_distance_eps_before_the_box():
    images = torch.full((2, 3, 8, 8), 0.5)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    rec = Recorder(pointwise_net())
    PGD(0.25, 0.01, 1, norm="l2")(rec, images, labels)
    assert torch.allclose(l2_dist(rec.inputs[0], images), torch.full((2,), 0.25, dtype=torch.float64), atol=1e-6)


# ----------------------------------------------------------------------------- losses


def test_cosine_loss_against_its_formula():
    logits = torch.tensor([[3.0, 4.0], [1.0, -1.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 3)  # pixels z = (3,1,0), (4,-1,2)
    labels = torch.tensor([[[1, 0, 255]]])
    # pixel 0: 1 - 4/5 = 0.2; pixel 1: 1 - 1/sqrt(2); pixel 2 ignored
    expected = (0.2 + 1 - 1 / math.sqrt(2)) / 2
    assert torch.allclose(L.cosine(logits, labels), torch.tensor([expected]), atol=1e-6)
    assert L.LOSSES["cosine"] is L.cosine


def test_tsallis_loss_against_its_formula_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, K, 3, 3, generator=g)
    labels = torch.randint(0, K, (2, 3, 3), generator=g)
    labels[0, 0, 0] = 255
    valid = labels != 255
    p = torch.softmax(logits, 1).gather(1, labels.clamp(max=K - 1).unsqueeze(1)).squeeze(1)
    for q in (-2.0, -0.5, 0.5, 0.99):
        expected = (1 - p ** (1 - q)) / (1 - q) * valid
        assert torch.allclose(L.pixel_tsallis(logits, labels, q), expected, atol=1e-6)
        # gradient with respect to the logits = p^(1-q) times CE's, pixel by pixel
        z = logits.clone().requires_grad_(True)
        gq = torch.autograd.grad(L.pixel_tsallis(z, labels, q).sum(), z)[0]
        gce = torch.autograd.grad(L.pixel_ce(z, labels).sum(), z)[0]
        assert torch.allclose(gq, gce * (p ** (1 - q)).unsqueeze(1), atol=1e-6)
    # q -> 1 gives CE; q = 1 is CE exactly
    ce = L.pixel_ce(logits, labels)
    assert torch.equal(L.pixel_tsallis(logits, labels, 1.0), ce)
    assert torch.allclose(L.pixel_tsallis(logits, labels, 1 - 1e-6), ce, atol=1e-5)
    # p clamped at 1e-12: a hopeless pixel gives (1 - 1e-12^(1-q)) / (1 - q), and no gradient
    far = torch.tensor([[0.0, 100.0]]).view(1, 2, 1, 1).requires_grad_(True)
    y = torch.zeros(1, 1, 1, dtype=torch.long)
    value = L.pixel_tsallis(far, y, 0.5)
    assert math.isclose(float(value.detach()), (1 - 1e-12**0.5) / 0.5, rel_tol=1e-6)
    assert torch.equal(torch.autograd.grad(value.sum(), far)[0], torch.zeros_like(far))


def test_tsallis_q_schedule_end_points():
    assert L.tsallis_q(1, 10) == -2.0 and L.tsallis_q(10, 10) == 1.0
    assert math.isclose(L.tsallis_q(4, 7), -0.5)  # halfway
    assert L.tsallis_q(1, 1) == -2.0
    with pytest.raises(DdcatError):
        L.tsallis_q(0, 5)
    logits, labels = torch.randn(1, K, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    assert torch.equal(L.tsallis(logits, labels, step=5, total=5), L.ce(logits, labels))


def recorded_steps(monkeypatch, loss: str) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    inner = L.LOSSES[loss]

    def spy(logits, labels, *, step=1, total=1, **kw):
        calls.append((step, total))
        return inner(logits, labels, step=step, total=total, **kw)

    monkeypatch.setitem(L.LOSSES, loss, spy)
    return calls


def test_tsallis_attack_restarts_its_q_schedule_in_each_red_eps_stage(monkeypatch):
    calls = recorded_steps(monkeypatch, "tsallis")
    attack = build_attack("tsallis", 0.03, steps=10, early_stop=False)
    assert (attack.loss, attack.red_eps, attack.track) == ("tsallis", True, "ce")
    attack(small_net(), *batch(n=2, size=8))
    # stages of 3, 3 and 4 iterations: gradients at steps 1..n of each, q from -2 to 1 in each
    assert calls == [(t, 3) for t in (1, 2, 3)] * 2 + [(t, 4) for t in (1, 2, 3, 4)]


def test_apgd_segpgd_lambda_runs_over_the_apgd_iterations(monkeypatch):
    calls = recorded_steps(monkeypatch, "segpgd")
    attack = build_attack("apgd-segpgd", 0.03, steps=10, early_stop=False)
    assert (attack.loss, attack.track, attack.red_eps) == ("segpgd", "ce", True)
    attack(small_net(), *batch(n=2, size=8))
    # red-eps stages of 3, 3, 4 iterations; in each, the gradient at x^(k) uses lambda = k / (2 n)
    # (step k + 1 of n), as rse's APGD does over its one stage
    assert calls == [(t, 3) for t in (1, 2, 3)] * 2 + [(t, 4) for t in (1, 2, 3, 4)]
    assert [L.segpgd_lambda(t, 4) for t, _ in calls[6:]] == [k / 8 for k in range(4)]


def test_the_named_members_and_their_registry_entries():
    assert build_attack("apgd-ce").loss == "ce" and build_attack("apgd-ce").track == "ce"
    spherical = build_attack("apgd-spherical")
    assert (spherical.loss, spherical.track) == ("masked-spherical", "loss")  # rse: it tracks itself
    for name in ("tsallis", "apgd-segpgd", "apgd-spherical", "padam-ce", "padam-cos"):
        e = registry.entry(name)
        assert e.member > 0 and e.budget == "iters" and e.randomized and e.norms == ("linf", "l2"), name
        assert name in registry.member_names()
        assert registry.name_of(build_attack(name, steps=3)) == name
    members = registry.member_names()
    # after SEA's APGD members, before PAdam and the PGD family (APGD early-stops the images it fools)
    assert members.index("tsallis") == members.index("apgd-js") + 1
    assert members.index("padam-cos") < members.index("pgd")
    l2 = registry.build_ensemble(0.5, steps=2, norm="l2")
    assert all(m.norm == "l2" for m in l2.members) and set(l2.names) <= set(members)
    assert build_attack("padam-ce", 8 / 255, steps=200) == PAdam(8 / 255, 200, "ce")
    assert build_attack("padam-cos", steps=5).loss == "cosine"
    with pytest.raises(DdcatError, match="has no option 'loss'"):
        build_attack("padam-ce", loss="js")


def test_masked_spherical_is_rse_definition():
    # rse's 'mask-norm-corrlog-avg': -(z_y / ||z||) on pixels still classified correctly
    logits = torch.tensor([[3.0, 4.0], [4.0, -1.0]]).T.reshape(1, 2, 1, 2)  # pixels z = (3, 4), (4, -1)
    labels = torch.tensor([[[1, 1]]])  # pixel 0 correct (argmax 1), pixel 1 wrong
    assert torch.allclose(L.masked_spherical(logits, labels), torch.tensor([(-4 / 5 + 0) / 2]))


# ----------------------------------------------------------------------------- PAdam


def test_adam_step_equals_torch_adam_amsgrad():
    g = torch.Generator().manual_seed(0)
    param = torch.randn(2, 3, 4, 4, generator=g)
    ref = param.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.01, betas=(0.9, 0.999), eps=1e-8, amsgrad=True, maximize=True, foreach=False)
    state: dict[str, torch.Tensor] = {}
    ours = param.clone()
    for t in range(1, 8):
        grad = torch.randn(param.shape, generator=g) * (10.0 ** -(t % 4))  # varying scales: AMSGrad's max matters
        ref.grad = grad.clone()
        opt.step()
        ours = adam_step(ours, grad, state, t, 0.01)
        assert torch.allclose(ours, ref.detach(), rtol=0, atol=1e-7), t
    # by hand, first step: m = -(0.1 g) ... param + lr * g / (|g| + eps) = param + lr sign(g) (|g| >> eps)
    first = adam_step(torch.zeros(3), torch.tensor([2.0, -3.0, 0.5]), {}, 1, 0.1)
    assert torch.allclose(first, torch.tensor([0.1, -0.1, 0.1]), atol=1e-7)


def reference_padam(model, x, y, loss_fn, eps, lr, steps, start):
    """rse's padam written out with torch.optim.Adam (its start drawn by the caller), recording its
    iterates; ddcat's loss convention (per-image means summed)."""
    delta = (start - x).clone().requires_grad_(True)
    adam = torch.optim.Adam([delta], lr=lr, amsgrad=True, maximize=True, foreach=False)
    iterates = [x + delta.detach()]
    for _ in range(steps):
        loss = loss_fn(model(x + delta), y).sum()
        delta.grad = torch.autograd.grad(loss, delta)[0]
        adam.step()
        with torch.no_grad():
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
        iterates.append(x + delta.detach())
    return iterates


@pytest.mark.parametrize("loss", ["ce", "cosine"])
def test_padam_iterates_equal_the_rse_loop_and_it_returns_the_lowest_accuracy_one(loss):
    images, labels = batch(n=2, size=8)
    net = small_net().eval()
    eps, steps = 8 / 255, 5
    rec = Recorder(net)
    adv = PAdam(eps, steps, loss, seed=1)(rec, images, labels)
    ours = rec.inputs  # x_0 .. x_{T-1} with gradient, then x_T scored
    ref = reference_padam(net, images, labels, L.LOSSES[loss], eps, 2 / 255, steps, ours[0])
    assert len(ours) == len(ref) == steps + 1
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-6)
    assert ((ours[0] - images).abs() <= eps).all() and not torch.equal(ours[0], images)  # the random start
    scores = [Score.of(net(x), labels, False) for x in ours]
    bad = torch.stack([s.bad for s in scores])  # (T + 1, N)
    result = Score.of(net(adv), labels, False)
    assert torch.equal(result.bad, bad.min(dim=0).values)  # the lowest-accuracy iterate, per image
    assert ((adv - images).abs() <= eps).all() and adv.min() >= 0 and adv.max() <= 1


def test_padam_checks_its_arguments():
    for kw, match in (({"lr": 0}, "lr"), ({"betas": (0.9, 1.0)}, "betas"), ({"adam_eps": -1}, "adam_eps"),
                      ({"loss": "nope"}, "unknown attack loss"), ({"steps": -1}, "steps")):
        with pytest.raises(DdcatError, match=match):
            PAdam(**kw)
    assert PAdam(0.5, norm="l2").learning_rate(torch.zeros(1, 3, 8, 8)) == pytest.approx(0.5 / (4 * math.sqrt(192)))
    assert PAdam().learning_rate(torch.zeros(1, 3, 8, 8)) == 2 / 255


# ----------------------------------------------------------------------------- ddcat eval --norm l2


def test_eval_norm_l2_end_to_end(tmp_path, capsys, clean_run):
    from ddcat.cli import main

    out = tmp_path / "l2"
    argv = ["eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--out", str(out),
            "--norm", "l2", "--eps", "0.5", "--attack", "pgd", "--steps", "2", "--attack", "tsallis",
            "--attack", "padam-ce", "--iters", "3"]
    assert main(argv) == 0
    records = json.loads((out / "metrics.json").read_text())["records"]
    attacked = [r for r in records if r["attack"] != "clean"]
    assert {r["attack"] for r in attacked} == {"pgd", "tsallis", "padam-ce"}
    assert all(r["norm"] == "l2" and r["eps"] == 0.5 for r in attacked)
    assert next(r for r in attacked if r["attack"] == "pgd")["alpha"] == 0.125  # no --alpha: eps / 4 under L2
    table = (out / "table.txt").read_text()
    assert "L2, eps=0.5" in table and "tsallis-3 L2, eps=0.5" in table
    # the config key does the same; --norm overrides it
    out2 = tmp_path / "l2-config"
    assert main(["eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--out", str(out2),
                 "--set", "eval.norm=l2", "--eps", "0.5", "--attack", "pgd", "--steps", "2"]) == 0
    again = json.loads((out2 / "metrics.json").read_text())["records"]
    assert again[1]["norm"] == "l2" and again[1]["mIoU"] == next(r for r in attacked if r["attack"] == "pgd")["mIoU"]
    capsys.readouterr()
    assert main(["eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--out", str(tmp_path / "bad"),
                 "--set", "eval.norm=l3", "--attack", "pgd", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "eval.norm" in err and "l3" in err and "Traceback" not in err


def test_eval_norm_l2_ensemble_end_to_end(tmp_path, clean_run):
    """``ddcat eval --norm l2 --attack ensemble --iters 2``: the L2 members only (the minimum-norm
    attacks are L-inf), each at the one budget 2, the record's norm, and the ensemble's numbers no
    higher than its members'."""
    from ddcat.attacks.registry import REGISTRY, member_names
    from ddcat.cli import main

    out = tmp_path / "l2-ensemble"
    argv = ["eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--out", str(out), "--norm", "l2",
            "--eps", "0.5", "--attack", "ensemble", "--iters", "2", "--set", "data.num_val=3"]
    assert main(argv) == 0
    clean, rec = json.loads((out / "metrics.json").read_text())["records"]
    l2_members = [n for n in member_names() if "l2" in REGISTRY[n].norms]
    assert {"dag", "pdpgd", "alma-prox"} & set(member_names()) and not {"dag", "pdpgd", "alma-prox"} & set(l2_members)
    assert rec["attack"] == "ensemble" and rec["norm"] == "l2" and rec["eps"] == 0.5 and rec["steps"] == 2
    assert rec["ensemble"]["members"] == l2_members == [m["name"] for m in rec["members"]] and "box" not in rec
    assert rec["num_images"] == 3
    for m in rec["members"]:
        assert rec["aAcc"] <= m["aAcc"] + 1e-12 and rec["mIoU"] <= m["mIoU"] + 1e-12
    assert rec["mIoU"] <= clean["mIoU"] + 1e-12
    assert "ensemble" in (out / "table.txt").read_text() and "L2" in (out / "table.txt").read_text()


def test_the_report_says_the_threat_model(tmp_path):
    from test_reporting import make_results

    from ddcat.reporting.report import write_report
    from ddcat.reporting.summary import threat_model

    results = make_results()
    results["evaluations"] = [e for e in results["evaluations"] if e["kind"] == "white-box" and e["seed"] == 0]
    assert threat_model(results) == "L-inf"
    assert "- Attack: BIM, L-inf eps" in write_report(results, tmp_path / "linf").read_text()
    for ev in results["evaluations"]:
        for r in ev["records"]:
            if r["attack"] != "clean":
                r["norm"] = "l2"
    assert threat_model(results) == "L2"
    md = write_report(results, tmp_path / "l2").read_text()
    assert "- Attack: BIM, L2 eps" in md and "- Threat model: L2" in md
    results["evaluations"][0]["records"][-1]["norm"] = "linf"
    assert threat_model(results).startswith("mixed")


def test_sweep_step_size_defaults_per_norm():
    from ddcat.evaluation.settings import AttackPlan, attack_settings, sweep_alpha

    assert sweep_alpha(None, "linf", 0.03) == 0.01 and sweep_alpha(None, "l2", 0.5) == 0.125
    assert sweep_alpha(0.2, "l2", 0.5) == 0.2 and sweep_alpha(None, "l2", 0.0) == 0.01
    settings = attack_settings(AttackPlan(("bim", "apgd"), (2,), (0.25, 0.5), alpha=None, iters=3, norm="l2"), [("self", None)])
    bims = [s for s in settings if s.attack_name == "bim"]
    assert [(s.attack.alpha, s.alpha, s.attack.norm, s.norm) for s in bims] == [(0.0625, 0.0625, "l2", "l2"), (0.125, 0.125, "l2", "l2")]
    assert all(s.attack.norm == "l2" and s.alpha is None for s in settings if s.attack_name == "apgd")
    linf = attack_settings(AttackPlan(("bim",), (2,)), [("self", None)])
    assert linf[1].attack == BIM(0.03, 0.01, 2) and linf[1].norm == "linf"
