"""Single-step and free adversarial training, PIR-AT's initialisation, the robustness watch and the
bf16 training attack: each against its equation or a reference written here, and exact resume."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddcat import trainlog as log_keys
from ddcat.checkpoint import load_checkpoint
from ddcat.config import load_config
from ddcat.errors import DdcatError
from ddcat.models import build_model
from ddcat.training import build_method, train
from ddcat.training.fgsm_rs import RandomStartFGSM
from ddcat.training.free import FreeAdversarialTraining, free_update
from ddcat.training.loop import replayed
from ddcat.training.watch import check_record, overfitting_warning

K = 4
EPS = 0.03


def tiny_cfg(method, *sets):
    base = ["model.width=8", "data.image_size=32", "train.crop_size=32", "data.num_train=16", "data.num_val=4",
            f"data.num_classes={K}", "train.batch_size=4", "eval.batch_size=4"]
    return load_config(None, [f"train.method={method}", *base, *sets])


def batch(seed=0, n=4, size=16):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    labels = torch.randint(0, K, (n, size, size), generator=g)
    labels[:, :2] = 255
    return images, labels


class Pixelwise(nn.Module):
    """A 1x1-conv segmenter returning the dict a training method reads (main head only)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, K, 1)

    def forward(self, x):
        return {"main": self.conv(x)} if self.training else self.conv(x)


# ----------------------------------------------------------------------------- fgsm-rs


def test_random_start_fgsm_is_one_sign_step_from_a_uniform_start():
    """x_1 = clip_[0,1](clip_eps(x_0 + alpha sign(grad CE(f(x_0))))), x_0 = clip_[0,1](x + U[-eps, eps]),
    written out here with the same generator; one forward and one backward."""
    model = Pixelwise().eval()
    calls = []
    images, labels = batch()
    attack = RandomStartFGSM(eps=EPS, alpha=1.25 * EPS)
    adv = attack(model, images, labels, forward=lambda x: calls.append(1) or model(x), seed=7)

    gen = torch.Generator().manual_seed(7)
    x0 = (images + (torch.rand(images.shape, generator=gen) * 2 - 1) * EPS).clamp(0, 1).requires_grad_(True)
    logits = model(x0)
    pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    valid = (labels != 255).float()
    loss = ((pixel * valid).sum((1, 2)) / valid.sum((1, 2))).sum()
    (grad,) = torch.autograd.grad(loss, x0)
    ref = torch.min(torch.max(x0 + 1.25 * EPS * grad.sign(), images - EPS), images + EPS).clamp(0, 1)
    assert len(calls) == 1
    assert torch.allclose(adv, ref, atol=1e-6, rtol=0)
    assert (adv - images).abs().max() <= EPS and adv.min() >= 0 and adv.max() <= 1
    # the step reaches the ball's faces on most coordinates (alpha > eps), the start alone does not
    assert float(((adv - images).abs() >= EPS - 1e-6).float().mean()) > 0.5
    assert not torch.equal(adv, RandomStartFGSM(eps=EPS, alpha=1.25 * EPS)(model, images, labels, seed=8))


def test_fgsm_rs_method_reads_its_step_and_ignores_attack_steps():
    method = build_method(tiny_cfg("fgsm-rs", "attack.fgsm_rs_step=2.0", "attack.steps=0"))
    assert method.name == "fgsm-rs" and isinstance(method.attack, RandomStartFGSM)
    assert method.attack.alpha == pytest.approx(2.0 * EPS) and method.attack.eps == EPS
    with pytest.raises(DdcatError, match="attack.steps"):
        tiny_cfg("sat", "attack.steps=0")


def test_ddcat_with_the_single_step_inner_attack_has_alg2_mask_labels():
    """attack.name=fgsm-rs: B_adv is the prediction on the random-start FGSM image; M_clean =
    1[B_clean != B_adv], M_adv = 0, as Alg. 2 written out on the whole batch."""
    from ddcat.training.ddcat import predict_combined
    from ddcat.training.losses import mask_labels

    torch.manual_seed(5)
    model = build_model("pspnet", "resnet18", K, ddc=True, width=8)
    method = build_method(tiny_cfg("ddcat", "attack.name=fgsm-rs", "attack.eps=0.1"))
    assert isinstance(method.attack, RandomStartFGSM)
    images, labels = batch(4, size=32)
    adv_part, targets = method.mask_targets(model, images, labels, 2, seed=3)
    adv_all = method.attack(model, images, labels, seed=3)
    m_clean, m_adv = mask_labels("ddcat", predict_combined(model, images), predict_combined(model, adv_all))
    assert torch.equal(adv_part, adv_all[2:])
    assert torch.equal(targets, torch.cat([m_clean[:2], m_adv[2:]]))
    assert int(targets[:2].sum()) > 0 and int(targets[2:].sum()) == 0


# ----------------------------------------------------------------------------- free


def test_free_update_by_hand():
    delta = torch.tensor([0.01, -0.03, 0.02, 0.0])
    grad = torch.tensor([1.0, -2.0, -0.5, 0.0])
    assert torch.allclose(free_update(delta, grad, 0.03), torch.tensor([0.03, -0.03, -0.01, 0.0]))


def test_free_replays_equal_shafahi_alg1_written_out():
    """Three replays of one batch then a new batch: weights and perturbation equal Alg. 1 of
    Shafahi et al. (one backward per replay, delta carried across replays and batches)."""
    eps, lr = 0.05, 0.5
    (xa, ya), (xb, yb) = batch(0), batch(1)
    model = Pixelwise().train()
    method = FreeAdversarialTraining(None, eps=eps, replays=3, adv_fraction=1.0, deep_sup_weight=0.4)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for x, y in [(xa, ya)] * 3 + [(xb, yb)]:
        opt.zero_grad()
        loss, _ = method.loss(model, model, x, y)
        loss.backward()
        opt.step()
    state = method.state_dict()

    ref = Pixelwise().train()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr)
    delta = torch.zeros_like(xa)
    for x, y in [(xa, ya)] * 3 + [(xb, yb)]:
        d = delta.clone().requires_grad_(True)
        out = ref((x + d).clamp(0, 1))["main"]
        ref_opt.zero_grad()
        F.cross_entropy(out, y, ignore_index=255).backward()
        ref_opt.step()
        delta = (delta + eps * d.grad.sign()).clamp(-eps, eps)
    assert torch.allclose(model.conv.weight, ref.conv.weight, atol=1e-6)
    assert torch.allclose(state["delta"], delta, atol=1e-7)
    assert float(delta.abs().max()) == pytest.approx(eps)


def test_free_restarts_the_perturbation_when_the_shape_changes():
    model = Pixelwise().train()
    method = FreeAdversarialTraining(None, eps=0.05, replays=2, adv_fraction=0.5, deep_sup_weight=0.4)
    loss, _ = method.loss(model, model, *batch(0))
    loss.backward()
    assert method.state_dict()["delta"].shape == (2, 3, 16, 16)
    loss, _ = method.loss(model, model, *batch(0, n=6))
    assert torch.equal(method._pending.detach(), torch.zeros(3, 3, 16, 16))


def test_replay_schedule():
    """train.iters counts replays: iterations 0..5 with m = 4 use batches 0, 0, 0, 0, 1, 1; a
    resume at iteration 5 starts on batch 5 // 4 = 1 (the sampler yields from there)."""
    assert [(t, b) for t, b in replayed(iter(["b0", "b1"]), 0, 6, 4)] == [(0, "b0"), (1, "b0"), (2, "b0"), (3, "b0"), (4, "b1"), (5, "b1")]
    assert [(t, b) for t, b in replayed(iter(["b1"]), 5, 6, 4)] == [(5, "b1")]
    assert [(t, b) for t, b in replayed(iter(["a", "b"]), 0, 2, 1)] == [(0, "a"), (1, "b")]


@pytest.mark.parametrize("poison", ["inf", "one-inf", "nan"])
def test_free_keeps_delta_when_the_perturbation_gradient_is_not_finite(poison):
    """train.amp: fp16 can give an inf / NaN gradient (the GradScaler then skips the optimiser step):
    the replay leaves delta as it was. Without the check, sign(+-inf) = +-1 takes a step of eps on a
    meaningless gradient (the inf cases fail without it); sign(NaN) is 0 in torch 2.13 on the CPU, so
    the NaN case pins the behaviour rather than catching a regression there. Simulated on the
    CPU by a hook that poisons the gradient reaching delta in the real backward, with infinities
    pointing away from the kept delta so that a step would move it; the replay after it steps
    again from the kept delta."""
    eps = 0.05
    model = Pixelwise().train()
    method = FreeAdversarialTraining(None, eps=eps, replays=4, adv_fraction=0.5, deep_sup_weight=0.4)
    images, labels = batch(0)
    method.loss(model, model, images, labels)[0].backward()
    kept = method.state_dict()["delta"].clone()
    assert torch.isfinite(kept).all() and float(kept.abs().max()) == pytest.approx(eps)
    away = torch.where(kept > 0, -float("inf"), float("inf"))  # a step on it moves every coordinate by eps

    def poisoned(grad):
        if poison == "inf":
            return away
        if poison == "nan":
            return torch.full_like(grad, float("nan"))
        grad = grad.clone()  # one infinite coordinate among finite ones: the whole step is skipped
        grad[0, 1, 2, 3] = away[0, 1, 2, 3]
        return grad

    loss, _ = method.loss(model, model, images, labels)
    assert torch.equal(method._pending.detach(), kept)
    method._pending.register_hook(poisoned)
    loss.backward()
    assert not torch.isfinite(method._pending.grad).all()
    if poison != "nan":  # what the update would have been
        assert not torch.equal(free_update(kept, method._pending.grad, eps), kept)
    after = method.state_dict()["delta"]
    assert torch.isfinite(after).all() and torch.equal(after, kept)
    # the next replay takes its step from the kept delta (Alg. 1 line 11 with a finite gradient)
    loss, _ = method.loss(model, model, images, labels)
    loss.backward()
    grad = method._pending.grad.clone()
    assert torch.isfinite(grad).all()
    assert torch.equal(method.state_dict()["delta"], (kept + eps * grad.sign()).clamp(-eps, eps))


def test_free_refuses_gradient_accumulation(tmp_path):
    with pytest.raises(DdcatError, match="train.accum_steps=1"):
        train(tiny_cfg("free", "train.accum_steps=2", "train.iters=1"), tmp_path / "run", progress=False)


# ----------------------------------------------------------------------------- exact resume


def weights(path):
    return load_checkpoint(path)["model"]


def resumed_from_prev(cfg, tmp_path):
    """Train ``cfg`` straight (6 iterations, a save every 3), then resume a copy of the iteration-3
    checkpoint (``last.prev.pt``) to the end; returns both final checkpoints."""
    train(cfg, tmp_path / "straight", progress=False)
    split = tmp_path / "split"
    split.mkdir()
    shutil.copy(tmp_path / "straight" / "last.prev.pt", split / "last.pt")
    assert load_checkpoint(split / "last.pt")["iteration"] == 3
    train(cfg, split, resume=True, progress=False)
    return load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(split / "last.pt")


@pytest.mark.parametrize("method, extra", [("fgsm-rs", []), ("free", []), ("ddcat", ["attack.name=fgsm-rs"])])
def test_resume_is_bit_exact(tmp_path, method, extra):
    """free at m = 4 is stopped in the middle of its first batch's replays (iteration 3)."""
    cfg = tiny_cfg(method, "train.iters=6", "train.save_every=3", *extra)
    a, b = resumed_from_prev(cfg, tmp_path)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    if method == "free":
        assert len(a["method_state"]) == 1 and a["method_state"][0]["delta"].abs().max() > 0
        # the carried perturbation matters: a resume without it trains other weights
        ckpt = torch.load(tmp_path / "straight" / "last.prev.pt", weights_only=True)
        del ckpt["method_state"]
        (tmp_path / "lost").mkdir()
        torch.save(ckpt, tmp_path / "lost" / "last.pt")
        train(cfg, tmp_path / "lost", resume=True, progress=False)
        c = weights(tmp_path / "lost" / "last.pt")
        assert not all(torch.equal(a["model"][k], c[k]) for k in c)


def test_free_on_a_user_model_resumes_exactly_and_is_watched(tmp_path):
    cfg = tiny_cfg("free", "train.iters=6", "train.save_every=3", "model.factory=standin_models:eighth",
                   "model.kwargs={num_classes: 4}", "model.width=64", "train.robust_check_every=3", "train.robust_check_images=2")
    a, b = resumed_from_prev(cfg, tmp_path)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    records = [json.loads(line) for line in (tmp_path / "split" / log_keys.LOG_NAME).read_text().splitlines()]
    assert [r[log_keys.ITER] for r in records if log_keys.ROBUST_TRAIN_ACC in r] == [6]


@pytest.mark.parametrize("method, extra", [("fgsm-rs", []), ("ddcat", ["attack.name=fgsm-rs", "model.ddc_head=head"])])
def test_single_step_recipes_on_a_user_model_resume_exactly_and_are_watched(tmp_path, method, extra):
    """fgsm-rs and DDC-AT with the single-step inner attack on a model.factory network (DDC-AT's
    f_a / f_m grafted on its classifier ``head``): they train, resume bit-exactly and are watched."""
    cfg = tiny_cfg(method, "train.iters=6", "train.save_every=3", "model.factory=standin_models:eighth",
                   "model.kwargs={num_classes: 4}", "model.width=64", "train.robust_check_every=3", "train.robust_check_images=2", *extra)
    assert isinstance(build_method(cfg).attack, RandomStartFGSM)
    a, b = resumed_from_prev(cfg, tmp_path)
    assert a["model_spec"]["factory"] == "standin_models:eighth"
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    records = [json.loads(line) for line in (tmp_path / "straight" / log_keys.LOG_NAME).read_text().splitlines()]
    assert [r[log_keys.ITER] for r in records if log_keys.ROBUST_TRAIN_ACC in r] == [3, 6]
    if method == "ddcat":  # DDC-AT ran: its mask labels are logged, none on the adversarial rows (Alg. 2)
        assert all(0.0 <= r[log_keys.MASK_POS_CLEAN] <= 1.0 and r[log_keys.MASK_POS_ADV] == 0.0 for r in records)
    else:
        assert not any(log_keys.MASK_POS_CLEAN in r for r in records)


def test_a_crafted_method_state_is_a_one_line_error(tmp_path):
    cfg = tiny_cfg("free", "train.iters=2", "train.save_every=1")
    train(cfg, tmp_path / "run", progress=False)
    for bad in ([{"delta": "rm -rf"}], "x", [{"delta": torch.zeros(3)}]):
        ckpt = torch.load(tmp_path / "run" / "last.prev.pt", weights_only=True)
        ckpt["method_state"] = bad
        (tmp_path / "bad").mkdir(exist_ok=True)
        torch.save(ckpt, tmp_path / "bad" / "last.pt")
        with pytest.raises(DdcatError, match=r"checkpoint .*last.pt: .*method_state"):
            train(cfg, tmp_path / "bad", resume=True, progress=False)


# ----------------------------------------------------------------------------- the watch


def test_overfitting_warning_rule(capsys):
    assert overfitting_warning(0.2, 0.5) and not overfitting_warning(0.25, 0.5) and not overfitting_warning(0.3, 0.5)
    rec = check_record({log_keys.ROBUST_PGD_ACC: 0.1, log_keys.ROBUST_TRAIN_ACC: 0.6}, 40)
    assert "catastrophic overfitting at iteration 40" in rec[log_keys.WARNING]
    assert capsys.readouterr().err.startswith("ddcat: warning: catastrophic overfitting")
    assert log_keys.WARNING not in check_record({log_keys.ROBUST_PGD_ACC: 0.4, log_keys.ROBUST_TRAIN_ACC: 0.6}, 40)
    assert log_keys.WARNING not in check_record({log_keys.ROBUST_PGD_ACC: 0.1}, 40)  # clean training: no training attack


def test_watch_logs_and_plots_and_does_not_change_the_training(tmp_path):
    from ddcat.reporting.plots import plot_training

    cfg = tiny_cfg("fgsm-rs", "train.iters=4", "train.log_every=3", "train.robust_check_every=2", "train.robust_check_images=3")
    train(cfg, tmp_path / "watched", progress=False)
    train(copy.deepcopy(cfg) | {"train": {**cfg["train"], "robust_check_every": 0}}, tmp_path / "plain", progress=False)
    a, b = weights(tmp_path / "watched" / "last.pt"), weights(tmp_path / "plain" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (tmp_path / "watched" / log_keys.LOG_NAME).read_text().splitlines()]
    checked = [r[log_keys.ITER] for r in records if log_keys.ROBUST_PGD_ACC in r]
    assert checked == [2, 4]  # logged at every check even between log_every lines
    for r in records:
        if log_keys.ROBUST_PGD_ACC in r:
            assert all(0.0 <= r[k] <= 1.0 for k in log_keys.ROBUST_KEYS)
            assert r[log_keys.ROBUST_PGD_ACC] <= r[log_keys.ROBUST_CLEAN_ACC] + 1e-9
    paths = plot_training(tmp_path / "watched")
    assert any(p.name == "robustness.png" and p.stat().st_size > 0 for p in paths)


def test_the_watch_of_a_real_run_uses_pgd10_from_a_random_start_and_its_warning_reaches_log_stderr_and_plot(tmp_path, monkeypatch, capsys):
    """A short real train(): the watch the loop builds runs PGD with 10 steps from a random start at
    the training budget next to the training attack itself. The watch's measurement is contrived
    at the second check only (PGD accuracy set to a quarter of the training attack's, as after a
    catastrophic overfit); the loop's rule then writes the warning into that record and onto
    stderr, and `ddcat plot-train` marks that point."""
    from ddcat.attacks import PGD
    from ddcat.cli import main
    from ddcat.reporting import plots
    from ddcat.training.watch import RobustnessWatch

    real, watches = RobustnessWatch.__call__, []

    def contrived(self, model, device):
        watches.append(self)
        record = real(self, model, device)
        assert record[log_keys.ROBUST_TRAIN_ACC] > 0
        share = 1.0 if len(watches) == 1 else 0.25  # the first check: PGD as strong as the training attack
        return {**record, log_keys.ROBUST_PGD_ACC: share * record[log_keys.ROBUST_TRAIN_ACC]}

    monkeypatch.setattr(RobustnessWatch, "__call__", contrived)
    cfg = tiny_cfg("fgsm-rs", "train.iters=4", "train.robust_check_every=2", "train.robust_check_images=3",
                   "attack.eps=0.04", "attack.alpha=0.007")
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    assert len(watches) == 2 and watches[0] is watches[1]
    pgd = watches[0].pgd
    assert isinstance(pgd, PGD) and pgd.steps == 10 and pgd.random_start is True and pgd.restarts == 1
    assert (pgd.eps, pgd.alpha, pgd.loss, pgd.norm, pgd.targeted) == (0.04, 0.007, "ce", "linf", False)
    assert isinstance(watches[0].attack, RandomStartFGSM) and watches[0].attack.eps == 0.04

    records = {r[log_keys.ITER]: r for r in map(json.loads, (run / log_keys.LOG_NAME).read_text().splitlines())}
    assert log_keys.WARNING not in records[2]
    warned = records[4]
    assert warned[log_keys.WARNING].startswith("catastrophic overfitting at iteration 4?")
    assert warned[log_keys.ROBUST_PGD_ACC] == pytest.approx(0.25 * warned[log_keys.ROBUST_TRAIN_ACC])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ddcat: warning:")]
    assert err == [f"ddcat: warning: {warned[log_keys.WARNING]}"]

    drawn, save = [], plots._save

    def spy(fig, path):
        drawn.extend((c.get_label(), c.get_offsets().tolist()) for ax in fig.axes for c in ax.collections)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    assert main(["plot-train", str(run)]) == 0
    markers = [(label, xy) for label, xy in drawn if label.startswith("warning")]
    assert markers == [("warning: PGD < 0.5 x training attack", [[4.0, pytest.approx(warned[log_keys.ROBUST_PGD_ACC])]])]
    assert (run / "robustness.png").stat().st_size > 0


# ----------------------------------------------------------------------------- bf16 training attack


def _conv_dtypes(model):
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("method", ["sat", "ddcat"])
def test_bf16_training_attack_runs_in_bf16_and_trains_in_fp32(method):
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", K, ddc=method == "ddcat", width=8).train()
    seen = _conv_dtypes(model)
    m = build_method(tiny_cfg(method, "attack.precision=bf16", "attack.steps=2"))
    assert m.attack.precision == "autocast"
    images, labels = batch(size=32)
    m.loss(model, model, images, labels, seed=1)
    attack_calls = 2 if method == "sat" else 2 + 1  # ddcat: + the no-grad B_adv forward
    assert seen[:attack_calls] == [torch.bfloat16] * attack_calls and seen[-1] == torch.float32


def test_bf16_ddcat_mask_labels_are_zero_at_eps_0():
    """B_clean (the attack's first forward) and B_adv are predicted in the same precision, so an
    adversarial image equal to the clean one gives no mask label 1."""
    from ddcat.attacks import build_attack
    from ddcat.training.ddcat import DivideAndConquerTraining

    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", K, ddc=True, width=8).train()
    method = DivideAndConquerTraining(build_attack("bim", eps=0.0, alpha=0.01, steps=1, precision="autocast"),
                                      division="ddcat", adv_fraction=0.5, deep_sup_weight=0.4, lambdas=(1, 1, 1), mask_ignore=True)
    method.attack_dtype = "bf16"
    images, labels = batch(size=48)
    _, targets = method.mask_targets(model, images, labels, 2)
    assert int(targets.sum()) == 0


# ----------------------------------------------------------------------------- PIR-AT


def test_pir_at_starts_from_the_robust_checkpoints_trunk(tmp_path):
    """model.pretrained may name a ddcat checkpoint or `ddcat export` file: the trunk of the new run
    is the file's, bit for bit (its heads are not taken: they are trained anew)."""
    from ddcat.checkpoint import build_from_spec, export_main_branch, initial_weights, spec_from_config

    src = tiny_cfg("sat", "train.iters=1")
    train(src, tmp_path / "robust", progress=False)
    export_main_branch(tmp_path / "robust" / "last.pt", tmp_path / "robust.pt")
    robust = weights(tmp_path / "robust.pt")
    for path in (tmp_path / "robust.pt", tmp_path / "robust" / "last.pt"):
        cfg = tiny_cfg("sat", "train.adv_fraction=1.0", f"model.pretrained={path}", "seed=3")
        torch.manual_seed(3)
        model = build_from_spec(spec_from_config(cfg, ddc=False), pretrained=initial_weights(cfg))
        trunk = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
        assert trunk and all(torch.equal(v, robust[k]) for k, v in trunk.items())
    torch.manual_seed(3)
    fresh = build_model("pspnet", "resnet18", K, width=8).state_dict()
    assert not all(torch.equal(fresh[k], robust[k]) for k in trunk)


def _imagenet_resnet18(seed):
    """A torchvision-named ResNet-18 (width 8) state dict with random values, and an ImageNet fc."""
    from ddcat.models.resnet import ResNet

    g = torch.Generator().manual_seed(seed)
    state = {k: (torch.randn(v.shape, generator=g) + (2.0 if k.endswith("running_var") else 0.0)) if v.is_floating_point()
             else torch.full_like(v, 7) for k, v in ResNet("resnet18", width=8).state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 64, generator=g), torch.randn(1000, generator=g)
    return state


def _published_files(tmp_path):
    """The same trunk in the layouts of the published robust ImageNet files: the robustness
    library's ({"model": AttackerModel state, "epoch", "optimizer"}, DataParallel's module. prefix,
    the attacker's own copy of the network given OTHER values here so that taking it would show)
    and RobustBench's (normalize_model: model.* and normalize.*)."""
    trunk, other = _imagenet_resnet18(11), _imagenet_resnet18(12)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    robustness = {"module.normalizer.new_mean": mean[:, None, None], "module.normalizer.new_std": std[:, None, None],
                  **{f"module.model.{k}": v for k, v in trunk.items()},
                  "module.attacker.normalize.new_mean": mean[:, None, None], "module.attacker.normalize.new_std": std[:, None, None],
                  **{f"module.attacker.model.{k}": v for k, v in other.items()}}
    robustbench = {"normalize.mean": mean.view(1, 3, 1, 1), "normalize.std": std.view(1, 3, 1, 1),
                   **{f"model.{k}": v for k, v in trunk.items()}}
    files = {"robustness.pt": {"model": robustness, "epoch": 90, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}},
             "robustness_state_dict.pt": {"state_dict": robustness, "epoch": 90},
             "robustbench.pt": robustbench,
             "robustbench_dataparallel.pt": {f"module.{k}": v for k, v in robustbench.items()}}
    for name, content in files.items():
        torch.save(content, tmp_path / name)
    return trunk, list(files)


def test_pir_at_starts_from_a_published_robust_imagenet_file(tmp_path):
    """model.pretrained naming a robustness-library or RobustBench ResNet file: the new model's trunk
    is the file's network (not its attacker's copy), its fc and normalisers are not loaded."""
    from ddcat.checkpoint import build_from_spec, initial_weights, spec_from_config

    trunk, names = _published_files(tmp_path)
    for name in names:
        cfg = tiny_cfg("sat", "train.adv_fraction=1.0", f"model.pretrained={tmp_path / name}")
        model = build_from_spec(spec_from_config(cfg, ddc=False), pretrained=initial_weights(cfg))
        own = model.backbone.state_dict()
        assert set(own) == set(trunk) - {"fc.weight", "fc.bias"}, name
        assert all(torch.equal(v, trunk[k]) for k, v in own.items()), name


def test_a_file_in_no_known_layout_is_a_one_line_error_naming_the_key(tmp_path):
    trunk = _imagenet_resnet18(11)
    cases = {
        "encoder.pt": ({f"encoder.{k}": v for k, v in trunk.items()}, "encoder.conv1.weight"),
        "timm_head.pt": ({**{f"model.{k}": v for k, v in trunk.items()}, "model.head.weight": torch.zeros(3)}, "model.head.weight"),
        "stray.pt": ({"model": {**{f"module.model.{k}": v for k, v in trunk.items()}, "module.teacher.w": torch.zeros(1)}}, "module.teacher.w"),
        "mixed.pt": ({"conv1.weight": trunk["conv1.weight"], **{f"model.{k}": v for k, v in trunk.items()}}, "conv1.weight"),
    }
    for name, (content, key) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(DdcatError) as info:
            build_model("pspnet", "resnet18", K, width=8, pretrained=str(tmp_path / name))
        message = str(info.value)
        assert str(tmp_path / name) in message and f"key '{key}' is in none of the known layouts" in message, message
        assert "\n" not in message


# ----------------------------------------------------------------------------- the recipes experiment


def test_recipes_file_expands_labelled_methods(tmp_path):
    from pathlib import Path

    from ddcat.experiment_file import load_experiment

    exp = load_experiment(Path(__file__).parent.parent / "configs" / "recipes.yaml")
    runs = {(r.method, r.seed): r.cfg for r in exp["runs"]}
    assert sorted({m for m, _ in runs}) == ["clean", "ddcat", "fgsm-rs", "free", "sat", "sat-adv100", "sat-bim1"]
    assert {s for _, s in runs} == {0, 1}
    bim1, adv100, sat = runs[("sat-bim1", 0)], runs[("sat-adv100", 1)], runs[("sat", 0)]
    assert bim1["train"]["method"] == "sat" and bim1["attack"]["steps"] == 1 and sat["attack"]["steps"] == 3
    assert adv100["train"]["method"] == "sat" and adv100["train"]["adv_fraction"] == 1.0
    assert runs[("free", 0)]["train"]["free_replays"] == 4
    assert exp["evaluation"]["strong"] == ["sea", "ensemble"] and exp["evaluation"]["sea_iters"] == 100
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {pspnet: {}}\nmethods: {sat-x: [1]}\nseeds: [0]\n")
    with pytest.raises(DdcatError, match="'methods' in .* label to config overrides"):
        load_experiment(bad)
    bad.write_text("models: {pspnet: {}}\nmethods: {sat-x: {train: {method: nope}}}\nseeds: [0]\n")
    with pytest.raises(DdcatError, match="train.method"):
        load_experiment(bad)
