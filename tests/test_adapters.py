"""ddcat.models.adapt: output conventions, resizing, normalization, DDC-AT heads, pass counts.

Stand-in networks (tests/standin_models.py) follow torchvision's dict convention and a plain
(N, K, H/8, W/8) output; a keyword-only module mimics transformers' ``pixel_values=`` call and
``.logits`` output. Every expectation is recomputed in the test from the wrapped network itself.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddcat.config import load_config
from ddcat.errors import DdcatError
from ddcat.models import adapt
from ddcat.training import build_method
from ddcat.training.ddcat import predict_combined
from ddcat.training.losses import cross_entropy
from standin_models import EighthResolution, ScaledHead, TorchvisionStyle, TupleOutput, TwoPath

K = 4


def images(n=4, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(n=4, size=32, seed=0):
    y = torch.randint(0, K, (n, size, size), generator=torch.Generator().manual_seed(seed + 1))
    y[:, :2] = 255
    return y


def up(t, size=(32, 32)):
    """Independent reference of the adapter's resize."""
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


class KeywordOnly(nn.Module):
    """transformers-style: ``forward(pixel_values=...)`` returning an object with ``.logits`` at 1/4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, K, 4, stride=4)

    def forward(self, pixel_values=None, labels=None):
        return SimpleNamespace(logits=self.conv(pixel_values), loss=None)


def tiny(cls=EighthResolution, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(num_classes=K, **kw).eval()


# ----------------------------------------------------------------------------- output conventions


def test_plain_tensor_at_one_eighth_is_resized_bilinearly():
    net = tiny()
    x = images()
    with torch.no_grad():
        assert torch.equal(adapt(net, num_classes=K).eval()(x), up(net(x)))


def test_torchvision_dict_reads_out_and_ignores_aux_in_eval():
    net = tiny(TorchvisionStyle, aux=True)
    x = images()
    with torch.no_grad():
        got = adapt(net, num_classes=K).eval()(x)
        assert torch.equal(got, net(x)["out"])
        assert not torch.equal(got, net(x)["aux"])


def test_keyword_call_and_logits_attribute():
    net = KeywordOnly()
    x = images()
    with torch.no_grad():
        assert torch.equal(adapt(net).eval()(x), up(net(pixel_values=x).logits))


def test_output_callable_reads_anything():
    net = tiny(TupleOutput)
    x = images()
    with torch.no_grad():
        assert torch.equal(adapt(net, output=lambda out: out[0]).eval()(x), up(net(x)[0]))


def test_normalization_inside_the_adapter_and_gradient_in_pixel_space():
    net = tiny()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x = images().requires_grad_(True)
    model = adapt(net, normalize=(mean, std)).eval()
    out = model(x)
    z = ((x - m) / s).detach().requires_grad_(True)
    ref = up(net(z))
    assert torch.allclose(out, ref, atol=1e-6)
    out.sum().backward()
    ref.sum().backward()
    assert torch.allclose(x.grad, z.grad / s, atol=1e-6)  # d/dx = d/dz / std: the eps-ball is in pixels
    imagenet = adapt(net, normalize="imagenet").eval()
    with torch.no_grad():
        ref = up(net((images() - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)))
        assert torch.allclose(imagenet(images()), ref, atol=1e-6)


@pytest.mark.parametrize(
    "net, kwargs, needle",
    [
        (TupleOutput(K), {}, "returned a tuple of 1 item"),
        (EighthResolution(5), {"num_classes": K}, "have 5 classes"),
        (nn.Flatten(), {}, "must be (N=2, K, h, w), got a tensor of shape (2, 108)"),
    ],
)
def test_unreadable_outputs_are_one_line_errors(net, kwargs, needle):
    with pytest.raises(DdcatError) as err:
        adapt(net, **kwargs).eval()(torch.rand(2, 3, 6, 6))
    assert needle in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- training interface


def test_train_mode_dict_has_deep_sup_only_with_an_auxiliary_output():
    x = images()
    net = tiny(TorchvisionStyle, aux=True)
    out = adapt(net, num_classes=K).train()(x)
    assert set(out) == {"main", "deep_sup"}
    net.eval()
    model = adapt(net, num_classes=K).eval()
    with torch.no_grad():
        raw = net(x)
        out = model(x, heads=("main", "deep_sup"))
    assert torch.equal(out["main"], raw["out"]) and torch.equal(out["deep_sup"], raw["aux"])
    plain = adapt(tiny(), num_classes=K).train()(x)
    assert set(plain) == {"main"}
    with pytest.raises(KeyError, match="deep_sup"):
        adapt(tiny(), num_classes=K)(x, heads=("main", "deep_sup"))


def test_no_deep_supervision_loss_is_the_main_cross_entropy():
    cfg = load_config(None, ["train.method=clean", f"data.num_classes={K}"])
    model = adapt(tiny(), num_classes=K).train()
    x, y = images(), labels()
    torch.manual_seed(0)
    loss, stats = build_method(cfg).loss(model, model, x, y)
    assert "loss_deep_sup" not in stats
    assert torch.allclose(loss, cross_entropy(model(x, heads=("main",))["main"], y))


def modes(module):
    return {name: m.training for name, m in module.named_modules()}


@pytest.mark.parametrize("ddc_head", [None, "classifier"])
def test_the_adapter_takes_the_wrapped_models_mode(ddc_head):
    """``adapt(model.eval())`` is in eval mode and returns logits; ``adapt(model.train())`` is in
    train mode and returns the training dict; no module inside changes its mode."""
    x = images()
    net = tiny(TorchvisionStyle, aux=True)  # tiny() returns the network in eval mode
    model = adapt(net, num_classes=K, ddc_head=ddc_head)
    assert not model.training and not any(modes(model).values())
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, torch.Tensor) and torch.equal(out, net(x)["out"])
    net = tiny(TorchvisionStyle, aux=True).train()
    model = adapt(net, num_classes=K, ddc_head=ddc_head)
    assert model.training and all(modes(model).values())
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, dict) and set(out) == {"main", "deep_sup", *(("auxiliary", "mask") if ddc_head else ())}
    # a mixed mode (a frozen trunk in a training model) is left as the user set it; f_a / f_m copy the head's
    net = tiny(TorchvisionStyle).train()
    net.backbone.eval()
    net.classifier[1].eval()  # its BatchNorm
    net.classifier[3].eval()  # the logits layer, which f_m replaces by a fresh one
    before = modes(net)
    assert set(before.values()) == {True, False}
    model = adapt(net, num_classes=K, ddc_head=ddc_head)
    assert model.training and modes(net) == before
    if ddc_head:
        assert modes(model.ddc_heads["auxiliary"]) == modes(net.classifier)
        assert modes(model.ddc_heads["mask"]) == modes(net.classifier)


# ----------------------------------------------------------------------------- DDC-AT heads


def test_ddc_heads_copy_the_named_head_and_f_m_has_two_outputs():
    net = tiny(TorchvisionStyle)
    model = adapt(net, num_classes=K, ddc_head="classifier").eval()
    f_a, f_m = model.ddc_heads["auxiliary"], model.ddc_heads["mask"]
    assert f_a is not net.classifier
    assert all(torch.equal(a, b) for a, b in zip(f_a.state_dict().values(), net.classifier.state_dict().values()))
    assert [type(m) for m in f_m] == [type(m) for m in net.classifier]
    assert f_m[-1].out_channels == 2 and f_m[-1].in_channels == net.classifier[-1].in_channels
    for a, b in zip(list(f_m)[:-1], list(net.classifier)[:-1]):  # layers before the last: copies
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    x = images()
    with torch.no_grad():
        out = model(x, heads=("main", "auxiliary", "mask"))
        feats = net.backbone(x)
        assert torch.allclose(out["auxiliary"], out["main"], atol=1e-6)  # f_a = f_n at the start
        assert torch.allclose(out["mask"], up(f_m(feats)), atol=1e-6)  # f_m reads f_n's input features


def test_bare_conv_head_becomes_a_fresh_two_output_conv():
    net = tiny()
    model = adapt(net, num_classes=K, ddc_head="head")
    assert isinstance(model.ddc_heads["mask"], nn.Conv2d) and model.ddc_heads["mask"].out_channels == 2
    x = images()
    with torch.no_grad():
        out = model.eval()(x, heads=("mask",))
        assert torch.allclose(out["mask"], up(model.ddc_heads["mask"](net.trunk(x))), atol=1e-6)


def test_rows_restrict_f_a_and_f_m_to_some_images():
    model = adapt(tiny(TorchvisionStyle), num_classes=K, ddc_head="classifier").eval()
    x = images()
    with torch.no_grad():
        full = model(x, heads=("main", "auxiliary", "mask"))
        part = model(x, heads=("main", "auxiliary", "mask"), rows={"auxiliary": slice(1, 3), "mask": slice(0, 2)})
    assert torch.equal(part["main"], full["main"])
    assert torch.allclose(part["auxiliary"], full["auxiliary"][1:3], atol=1e-6)
    assert torch.allclose(part["mask"], full["mask"][0:2], atol=1e-6)


def test_eval_mode_computes_the_original_head_only():
    net = tiny(TorchvisionStyle)
    model = adapt(net, num_classes=K, ddc_head="classifier").eval()
    calls = {"aux": 0, "mask": 0}
    model.ddc_heads["auxiliary"].register_forward_hook(lambda *a: calls.__setitem__("aux", calls["aux"] + 1))
    model.ddc_heads["mask"].register_forward_hook(lambda *a: calls.__setitem__("mask", calls["mask"] + 1))
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), net(x)["out"])
    assert calls == {"aux": 0, "mask": 0}
    assert model._captured is None  # the hook keeps no features outside a DDC forward


@pytest.mark.parametrize(
    "cls, path, needle",
    [
        (TorchvisionStyle, "decode_head.classifier", "has no attribute 'decode_head'"),
        (TorchvisionStyle, "classifier.9", "has no attribute '9'"),
        (EighthResolution, "head.weight", "is a Parameter, not an nn.Module"),
        (TorchvisionStyle, "backbone", "has 8 outputs, not the 4 classes"),
    ],
)
def test_bad_head_paths(cls, path, needle):
    with pytest.raises(DdcatError) as err:
        adapt(tiny(cls), num_classes=K, ddc_head=path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_head_whose_logits_sum_two_layers_is_a_one_line_error():
    model = adapt(tiny(TwoPath), num_classes=K, ddc_head="head").eval()
    with pytest.raises(DdcatError) as err:
        model(images(), heads=("main", "mask"))
    assert "as f_m fails" in str(err.value) and "\n" not in str(err.value)


def test_head_that_does_not_produce_the_logits_is_detected():
    model = adapt(tiny(ScaledHead), num_classes=K, ddc_head="head").eval()
    with pytest.raises(DdcatError, match="is not the module that produces the model's logits"):
        model(images(), heads=("main", "auxiliary", "mask"))


# ----------------------------------------------------------------------------- training methods


def tiny_cfg(method, **sets):
    base = {"train.method": method, "train.batch_size": 4, "attack.steps": 3, "data.num_classes": K}
    base.update(sets)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def one_step(method, model, **sets):
    model.train()
    loss, stats = build_method(tiny_cfg(method, **sets)).loss(model, model, images(), labels())
    model.zero_grad()
    loss.backward()
    return stats


def grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("method", ["ddcat", "ddcat-m", "ddcat-n"])
def test_ddc_methods_train_every_head_of_a_user_model(method):
    net = tiny(TorchvisionStyle, aux=True)
    model = adapt(net, num_classes=K, ddc_head="classifier")
    stats = one_step(method, model)
    assert {"loss_main", "loss_aux", "loss_mask", "loss_deep_sup"} <= set(stats)
    assert grad_norm(net.backbone) > 0 and grad_norm(net.aux_classifier) > 0 and grad_norm(model.ddc_heads["mask"]) > 0



@pytest.mark.parametrize("to_aux", [False, True])
def test_ddc_routing_decides_which_copy_of_the_head_learns(to_aux):
    """p = argmax f_m: with every pixel sent to f_a, eq. 3 gives f_n (the user's head) nothing, and vice versa."""
    net = tiny(TorchvisionStyle)
    model = adapt(net, num_classes=K, ddc_head="classifier")
    with torch.no_grad():
        last = model.ddc_heads["mask"][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-20.0, 20.0] if to_aux else [20.0, -20.0]))
    stats = one_step("ddcat", model)
    assert stats["routed_aux_clean"] == float(to_aux)
    if to_aux:
        assert grad_norm(net.classifier) == 0.0 and grad_norm(model.ddc_heads["auxiliary"]) > 0
    else:
        assert grad_norm(net.classifier) > 0 and grad_norm(model.ddc_heads["auxiliary"]) == 0.0


def test_ddc_mask_targets_equal_alg2_computed_naively_on_a_user_model():
    from ddcat.training.losses import mask_labels

    model = adapt(tiny(TorchvisionStyle, seed=3), num_classes=K, ddc_head="classifier")
    method = build_method(tiny_cfg("ddcat"))
    x, y = images(seed=4), labels(seed=4)
    adv_part, targets = method.mask_targets(model, x, y, 2)
    adv_all = method.attack(model, x, y)
    m_clean, m_adv = mask_labels("ddcat", predict_combined(model, x), predict_combined(model, adv_all))
    assert torch.equal(adv_part, adv_all[2:])
    assert torch.equal(targets, torch.cat([m_clean[:2], m_adv[2:]]))


class Counter:
    """Trunk passes of a user model (images per call of the wrapped network), its backwards, and head calls."""

    def __init__(self, model):
        self.forward, self.backward, self.heads = [], 0, {"main": 0, "auxiliary": 0, "mask": 0}
        model.model.register_forward_hook(self._fwd)
        named = {"main": model.model.classifier, **model.ddc_heads}
        for name, head in named.items():
            head.register_forward_hook(lambda m, i, o, name=name: self.heads.__setitem__(name, self.heads[name] + 1))

    def _fwd(self, module, inputs, output):
        self.forward.append(inputs[0].shape[0])
        if output["out"].requires_grad:
            output["out"].register_hook(self._bwd)

    def _bwd(self, grad):
        self.backward += 1


@pytest.mark.parametrize("steps", [1, 3])
def test_ddcat_iteration_on_a_user_model_costs_what_it_costs_on_ddcats_own(steps):
    """The same counts as tests/test_training_methods.py::test_documented_cost_of_one_iteration."""
    m = 4
    model = adapt(tiny(TorchvisionStyle), num_classes=K)
    count = Counter(SimpleNamespace(model=model.model, ddc_heads={}))
    one_step("sat", model, **{"attack.steps": steps})
    assert count.forward == [m // 2] * steps + [m]
    assert count.backward == steps + 1

    model = adapt(tiny(TorchvisionStyle), num_classes=K, ddc_head="classifier")
    count = Counter(model)
    one_step("ddcat", model, **{"attack.steps": steps})
    assert count.forward == [m] * steps + [m // 2, m]
    assert count.backward == steps + 1
    assert count.heads == {"main": steps + 2, "auxiliary": 3, "mask": 3}

    model = adapt(tiny(TorchvisionStyle), num_classes=K, ddc_head="classifier")
    count = Counter(model)
    one_step("ddcat-n", model, **{"attack.steps": steps})
    assert count.forward == [m // 2] * steps + [m // 2, m]

    model = adapt(tiny(TorchvisionStyle), num_classes=K, ddc_head="classifier")
    count = Counter(model)
    one_step("ddcat-m", model, **{"attack.steps": steps})
    assert count.forward == [m] * steps + [m, m]


def test_deepcopy_of_an_adapted_model_keeps_its_own_hook():
    model = adapt(tiny(TorchvisionStyle), num_classes=K, ddc_head="classifier").eval()
    twin = copy.deepcopy(model)
    x = images()
    with torch.no_grad():
        a = model(x, heads=("main", "auxiliary", "mask"))
        b = twin(x, heads=("main", "auxiliary", "mask"))
    assert all(torch.equal(a[k], b[k]) for k in a)
