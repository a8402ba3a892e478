"""One iteration of every method on a tiny model: gradients, BatchNorm statistics and cost."""


import pytest
import torch

from ddcat.config import load_config
from ddcat.errors import DdcatError
from ddcat.models import build_model
from ddcat.training import build_method
from ddcat.training.ddcat import CleanPrediction, predict_combined

K = 4


def tiny_cfg(method, **sets):
    base = {"train.method": method, "train.batch_size": 4, "attack.steps": 3, "data.num_classes": K}
    base.update(sets)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def tiny_model(ddc, seed=0):
    torch.manual_seed(seed)
    return build_model("pspnet", "resnet18", K, ddc=ddc, width=8)


def batch(seed=0, n=4, size=32):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    labels = torch.randint(0, K, (n, size, size), generator=g)
    labels[:, :2, :] = 255
    return images, labels


def head_grad_norms(model):
    return {name: sum(float(p.grad.abs().sum()) for p in head.parameters() if p.grad is not None) for name, head in model.heads.items()}


def one_step(method_name, model, **sets):
    method = build_method(tiny_cfg(method_name, **sets))
    images, labels = batch()
    model.train()
    loss, stats = method.loss(model, model, images, labels)
    model.zero_grad()
    loss.backward()
    return stats


def force_routing(model, to_aux: bool):
    """Bias the mask head so that argmax is 1 (aux) or 0 (main) on every pixel."""
    last = model.heads["mask"][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-20.0, 20.0] if to_aux else [20.0, -20.0]))


@pytest.mark.parametrize("method", ["clean", "sat"])
def test_plain_methods_train_main_and_deep_supervision(method):
    model = tiny_model(ddc=False)
    one_step(method, model)
    norms = head_grad_norms(model)
    assert norms["main"] > 0 and norms["deep_sup"] > 0


@pytest.mark.parametrize("method", ["ddcat", "ddcat-m", "ddcat-n"])
def test_ddc_all_pixels_routed_to_main(method):
    model = tiny_model(ddc=True)
    force_routing(model, to_aux=False)
    stats = one_step(method, model)
    norms = head_grad_norms(model)
    assert stats["routed_aux_clean"] == 0.0
    assert norms["main"] > 0 and norms["deep_sup"] > 0
    assert norms["auxiliary"] == 0.0  # p = 0 everywhere: eq. 4 gives f_a nothing
    assert norms["mask"] > 0  # eq. 5 always trains f_m


def test_ddc_all_pixels_routed_to_aux():
    model = tiny_model(ddc=True)
    force_routing(model, to_aux=True)
    stats = one_step("ddcat", model)
    norms = head_grad_norms(model)
    assert stats["routed_aux_clean"] == 1.0
    assert norms["main"] == 0.0  # q = 0 everywhere: eq. 3 gives f_n nothing
    assert norms["auxiliary"] > 0 and norms["mask"] > 0


def test_ddc_mask_labels_of_adversarial_half_are_zero():
    model = tiny_model(ddc=True)
    stats = one_step("ddcat", model)
    assert stats["mask_pos_adv"] == 0.0


def test_ddcat_n_mask_labels_of_clean_half_are_zero():
    model = tiny_model(ddc=True)
    stats = one_step("ddcat-n", model)
    assert stats["mask_pos_clean"] == 0.0


@pytest.mark.parametrize("method", ["sat", "ddcat", "ddcat-m", "ddcat-n"])
def test_attack_forwards_do_not_touch_batchnorm_statistics(method):
    model = tiny_model(ddc=method != "sat")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [int(m.num_batches_tracked) for m in bns]
    one_step(method, model)
    # exactly one train-mode forward (the training batch) updated each BatchNorm once
    assert [int(m.num_batches_tracked) for m in bns] == [b + 1 for b in before]


def test_clean_prediction_equals_explicit_combined_prediction():
    model = tiny_model(ddc=True).eval()
    images, _ = batch(1)
    tap = CleanPrediction(model)
    x = images.clone().requires_grad_(True)
    logits = tap(x)
    assert torch.equal(tap.b_clean, predict_combined(model, images))
    with torch.no_grad():
        assert torch.allclose(logits, model(images), atol=1e-6)
    first = tap.b_clean
    tap(images + 0.01)  # later calls return the main logits and leave B_clean alone
    assert tap.b_clean is first


def test_random_start_attack_gets_b_clean_from_a_separate_forward():
    """A training attack with a random start: its first forward is not at the clean images, so
    B_clean costs one separate no-grad pass (and the mask labels still equal Alg. 2)."""
    from ddcat.training.losses import mask_labels

    steps, m = 2, 4
    model = tiny_model(ddc=True, seed=5)
    method = build_method(tiny_cfg("ddcat", **{"attack.name": "pgd", "attack.steps": steps}))
    assert not method.attack.starts_at_clean
    images, labels = batch(4)
    count = Counter(model)
    adv_part, targets = method.mask_targets(model, images, labels, 2, seed=3)
    # PGD: steps gradient passes + 1 scoring pass on all m; B_clean and B_adv on the clean half
    assert count.forward == [m] * (steps + 1) + [m // 2, m // 2]
    adv_all = method.attack(model, images, labels, seed=3)
    m_clean, m_adv = mask_labels("ddcat", predict_combined(model, images), predict_combined(model, adv_all))
    assert torch.equal(adv_part, adv_all[2:])
    assert torch.equal(targets, torch.cat([m_clean[:2], m_adv[2:]]))


class Counter:
    """Counts trunk forwards (images per call) and trunk backwards, and head forwards."""

    def __init__(self, model):
        self.forward, self.backward, self.heads = [], 0, {}
        model.backbone.register_forward_hook(self._fwd)
        for name, head in model.heads.items():
            head.register_forward_hook(lambda m, i, o, name=name: self.heads.__setitem__(name, self.heads.get(name, 0) + 1))

    def _fwd(self, module, inputs, output):
        self.forward.append(inputs[0].shape[0])
        c4 = output[1]
        if c4.requires_grad:
            c4.register_hook(self._bwd)

    def _bwd(self, grad):
        self.backward += 1


@pytest.mark.parametrize("steps", [1, 3])
def test_documented_cost_of_one_iteration(steps):
    m = 4
    # SAT: n attack passes on the m/2 adversarial images, one training pass on m
    model = tiny_model(ddc=False)
    count = Counter(model)
    one_step("sat", model, **{"attack.steps": steps})
    assert count.forward == [m // 2] * steps + [m]
    assert count.backward == steps + 1

    # DDC-AT: n attack passes on all m (main head only, the first also reads f_a/f_m on the
    # clean half), one no-grad pass on the adversarial versions of the clean half (B_adv),
    # one training pass on m through all heads
    model = tiny_model(ddc=True)
    count = Counter(model)
    one_step("ddcat", model, **{"attack.steps": steps})
    assert count.forward == [m] * steps + [m // 2, m]
    assert count.backward == steps + 1
    assert count.heads["main"] == steps + 2
    assert count.heads["auxiliary"] == 3 and count.heads["mask"] == 3
    assert count.heads["deep_sup"] == 1  # training forward only

    # DDC-AT-N attacks only the adversarial half
    model = tiny_model(ddc=True)
    count = Counter(model)
    one_step("ddcat-n", model, **{"attack.steps": steps})
    assert count.forward == [m // 2] * steps + [m // 2, m]

    # DDC-AT-M needs the boundary property of every image
    model = tiny_model(ddc=True)
    count = Counter(model)
    one_step("ddcat-m", model, **{"attack.steps": steps})
    assert count.forward == [m] * steps + [m, m]


def test_clean_cost_is_one_pass():
    model = tiny_model(ddc=False)
    count = Counter(model)
    one_step("clean", model)
    assert count.forward == [4] and count.backward == 1


def test_fully_adversarial_sat_attacks_the_whole_batch():
    model = tiny_model(ddc=False)
    count = Counter(model)
    one_step("sat", model, **{"train.adv_fraction": 1.0, "attack.steps": 2})
    assert count.forward == [4, 4, 4]


def test_training_attack_is_configurable():
    method = build_method(tiny_cfg("sat", **{"attack.name": "segpgd", "attack.steps": 5, "attack.eps": 0.02}))
    assert type(method.attack).__name__ == "PGD" and method.attack.loss == "segpgd"
    assert method.attack.steps == 5 and method.attack.eps == 0.02


def test_ddc_gradient_uses_main_branch_only_in_attack():
    """The attack on a DDC model must see f_n alone: same adversarial images as on the plain model."""
    ddc = tiny_model(ddc=True)
    plain = build_model("pspnet", "resnet18", K, ddc=False, width=8)
    state = {k: v for k, v in ddc.state_dict().items() if not k.startswith(("heads.auxiliary", "heads.mask"))}
    plain.load_state_dict(state)
    from ddcat.attacks import BIM

    images, labels = batch(2)
    a = BIM(0.03, 0.01, 3)
    assert torch.equal(a(ddc, images, labels), a(plain, images, labels))


@pytest.mark.parametrize(
    "sets, needle",
    [
        ({"train.method": "sat", "train.batch_size": 1}, "too small"),
        ({"train.method": "ddcat", "train.batch_size": 1}, "needs clean and adversarial"),
        ({"train.method": "ddcat", "train.adv_fraction": 1.0}, "adv_fraction=1.0"),
    ],
)
def test_batches_that_cannot_be_split(sets, needle):
    cfg = load_config(None, [f"{k}={v}" for k, v in sets.items()])
    with pytest.raises(DdcatError, match=needle):
        build_method(cfg).split(cfg["train"]["batch_size"])


@pytest.mark.parametrize("sets, needle", [(["train.method=fancy"], "train.method"), (["train.adv_fraction=1.5"], "adv_fraction")])
def test_bad_method_config(sets, needle):
    with pytest.raises(DdcatError, match=needle):
        load_config(None, sets)


@pytest.mark.parametrize("division", ["ddcat", "ddcat-m", "ddcat-n"])
def test_mask_targets_equal_alg2_computed_naively(division):
    """The row-restricted, reuse-everything implementation equals Alg. 2 written out directly."""
    from ddcat.training.ddcat import DivideAndConquerTraining
    from ddcat.training.losses import mask_labels

    model = tiny_model(ddc=True, seed=5)
    cfg = tiny_cfg(division)
    method = build_method(cfg)
    assert isinstance(method, DivideAndConquerTraining)
    images, labels = batch(4)
    n_clean = 2
    adv_part, targets = method.mask_targets(model, images, labels, n_clean)

    # naive Alg. 2 on the whole batch: attack every image, B on clean and adversarial versions
    adv_all = method.attack(model, images, labels)
    b_clean, b_adv = predict_combined(model, images), predict_combined(model, adv_all)
    m_clean, m_adv = mask_labels(division, b_clean, b_adv)
    assert torch.equal(adv_part, adv_all[n_clean:])
    assert torch.equal(targets, torch.cat([m_clean[:n_clean], m_adv[n_clean:]]))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice_and_head_learning_rate(name, cls):
    from ddcat.training import optimizer_for
    from ddcat.training.optim import set_poly_lr

    cfg = tiny_cfg("clean", **{"train.optimizer": name, "train.lr": 0.002, "train.head_lr_mult": 10})
    model = tiny_model(ddc=True)
    opt = optimizer_for(model, cfg["train"])
    assert type(opt) is cls
    trunk, new = opt.param_groups
    assert {id(p) for p in new["params"]} == {id(p) for p in model.new_parameters()}
    assert len(trunk["params"]) + len(new["params"]) == len(list(model.parameters()))
    t = cfg["train"]
    set_poly_lr(opt, t["lr"], 0, t["iters"], t["poly_power"])
    assert trunk["lr"] == pytest.approx(0.002) and new["lr"] == pytest.approx(0.02)


def test_unknown_optimizer_and_division_are_one_line_errors():
    """Python callers past the config's checks get DdcatError naming the value, not a ValueError."""
    from ddcat.training.ddcat import DivideAndConquerTraining
    from ddcat.training.losses import DIVISIONS
    from ddcat.training.optim import build_optimizer

    with pytest.raises(DdcatError, match=r"train.optimizer: unknown optimizer 'adam'; valid: sgd, adamw"):
        build_optimizer(tiny_model(ddc=False), "adam", 0.01, 10, 0.9, 1e-4)
    attack = build_method(tiny_cfg("sat")).attack
    with pytest.raises(DdcatError, match=r"unknown DDC-AT division 'ddcat-x'"):
        DivideAndConquerTraining(attack, "ddcat-x", 0.5, 0.4, (1, 1, 1), True)
    method = DivideAndConquerTraining(attack, DIVISIONS["ddcat-n"], 0.5, 0.4, (1, 1, 1), True)
    assert method.name == "ddcat-n" and method.division is DIVISIONS["ddcat-n"]
