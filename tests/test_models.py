"""Models: shapes, which heads run, output stride, stems, torchvision naming, pretrained loading,
and the DDC-AT heads costing nothing at inference."""

from __future__ import annotations

import shutil

import pytest
import torch

from ddcat.errors import DdcatError
from ddcat.models import DDC_EXTRA_HEADS, build_model
from ddcat.models.resnet import ResNet

K = 3
W = 8  # tiny width for every test model
ARCHS = ("pspnet", "deeplabv3")
BACKBONES = ("resnet18", "resnet50")


def tiny(arch="pspnet", backbone="resnet18", ddc=False, seed=0, **options):
    torch.manual_seed(seed)
    options.setdefault("width", W)
    return build_model(arch, backbone, K, ddc=ddc, **options)


def images(n=2, h=32, w=32, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- forward shapes


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("arch", ARCHS)
def test_eval_forward_returns_main_logits_at_input_resolution(arch, backbone):
    model = tiny(arch, backbone).eval()
    with torch.no_grad():
        out = model(images(2, 32, 40))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, K, 32, 40)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("ddc", [False, True])
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("arch", ARCHS)
def test_train_forward_returns_every_head(arch, backbone, ddc):
    model = tiny(arch, backbone, ddc=ddc).train()
    out = model(images(2, 32, 32))
    assert isinstance(out, dict)
    expected = {"main", "deep_sup"} | ({"auxiliary", "mask"} if ddc else set())
    assert set(out) == expected
    for name, logits in out.items():
        assert logits.shape == (2, 2 if name == "mask" else K, 32, 32), name


def test_heads_argument_computes_exactly_the_listed_heads():
    model = tiny(ddc=True).eval()
    with torch.no_grad():
        out = model(images(), heads=("mask", "auxiliary"))
    assert set(out) == {"mask", "auxiliary"}
    assert out["mask"].shape == (2, 2, 32, 32)
    with pytest.raises(KeyError, match="no head 'nonsense'"):
        model(images(), heads=("nonsense",))


class HeadCalls:
    """Forward hooks on every head: which ones ran."""

    def __init__(self, model):
        self.calls: list[str] = []
        self.handles = [
            head.register_forward_hook(lambda mod, inp, out, name=name: self.calls.append(name))
            for name, head in model.heads.items()
        ]
        self.handles.append(model.context.register_forward_hook(lambda *a: self.calls.append("context")))

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_forward_of_ddc_model_computes_only_the_main_head(arch):
    model = tiny(arch, ddc=True)
    hooks = HeadCalls(model)
    model.train()
    model(images())
    # the hooks work: a training forward runs every head
    assert sorted(hooks.calls) == sorted(["context", "main", "auxiliary", "mask", "deep_sup"])
    hooks.calls.clear()
    model.eval()
    with torch.no_grad():
        model(images())
    assert hooks.calls == ["context", "main"]
    hooks.calls.clear()
    # also with gradients enabled (the attack's situation)
    x = images().requires_grad_(True)
    model(x).sum().backward()
    assert hooks.calls == ["context", "main"]
    assert x.grad is not None and x.grad.abs().sum() > 0
    hooks.remove()


def test_deep_sup_alone_skips_the_context_module():
    model = tiny(ddc=True).eval()
    hooks = HeadCalls(model)
    with torch.no_grad():
        model(images(), heads=("deep_sup",))
    assert hooks.calls == ["deep_sup"]


# ----------------------------------------------------------------------------- trunk geometry


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("stride", [8, 16, 32])
def test_output_stride_sets_layer3_and_layer4_resolution(backbone, stride):
    model = tiny("pspnet", backbone, output_stride=stride).eval()
    x = images(1, 64, 96)
    with torch.no_grad():
        c3, c4 = model.backbone(x)
        out = model(x)
    c3_stride = 8 if stride == 8 else 16
    assert c4.shape[-2:] == (64 // stride, 96 // stride)
    assert c3.shape[-2:] == (64 // c3_stride, 96 // c3_stride)
    expansion = 4 if backbone == "resnet50" else 1
    assert c4.shape[1] == W * 8 * expansion and c3.shape[1] == W * 4 * expansion
    assert out.shape == (1, K, 64, 96)


def test_output_stride_uses_dilation_not_stride():
    trunk = ResNet("resnet50", width=W, output_stride=8)
    # layer3/layer4 keep the resolution: no stride, dilation 2 / 4 on the 3x3 convs (after block 0)
    assert trunk.layer3[0].conv2.stride == (1, 1) and trunk.layer4[0].conv2.stride == (1, 1)
    assert trunk.layer3[1].conv2.dilation == (2, 2) and trunk.layer4[1].conv2.dilation == (4, 4)
    assert trunk.layer2[0].conv2.stride == (2, 2)
    trunk16 = ResNet("resnet50", width=W, output_stride=16)
    assert trunk16.layer3[0].conv2.stride == (2, 2) and trunk16.layer4[1].conv2.dilation == (2, 2)


def test_deep_stem_has_three_3x3_convs():
    deep = tiny(deep_stem=True).backbone
    assert deep.conv1.weight.shape == (W // 2, 3, 3, 3)
    assert deep.conv2.weight.shape == (W // 2, W // 2, 3, 3)
    assert deep.conv3.weight.shape == (W, W // 2, 3, 3)
    assert deep.conv1.stride == (2, 2)
    keys = set(deep.state_dict())
    assert {"conv2.weight", "bn2.running_mean", "conv3.weight", "bn3.weight"} <= keys
    plain = tiny(deep_stem=False).backbone
    assert plain.conv1.weight.shape == (W, 3, 7, 7)
    assert not hasattr(plain, "conv2") and "conv2.weight" not in plain.state_dict()
    with torch.no_grad():  # same output geometry either way
        assert tiny(deep_stem=True).eval()(images()).shape == (2, K, 32, 32)


# ----------------------------------------------------------------------------- torchvision naming


def torchvision_trunk_keys(depth: str) -> set[str]:
    """The state-dict keys of torchvision's resnet18/50 minus ``fc.*``, derived from its layout."""
    blocks, convs = {"resnet18": ([2, 2, 2, 2], 2), "resnet50": ([3, 4, 6, 3], 3)}[depth]
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", *(f"bn1.{s}" for s in bn)}
    for layer, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{layer}.{b}"
            for c in range(1, convs + 1):
                keys.add(f"{p}.conv{c}.weight")
                keys.update(f"{p}.bn{c}.{s}" for s in bn)
            if b == 0 and (layer > 1 or depth == "resnet50"):
                keys.add(f"{p}.downsample.0.weight")
                keys.update(f"{p}.downsample.1.{s}" for s in bn)
    return keys


@pytest.mark.parametrize("backbone,count", [("resnet18", 120), ("resnet50", 318)])
def test_backbone_keys_follow_torchvision_naming(backbone, count):
    keys = set(tiny("pspnet", backbone).backbone.state_dict())
    # torchvision: resnet18 has 122 state-dict entries, resnet50 320, two of them fc.weight/fc.bias
    assert len(keys) == count
    assert keys == torchvision_trunk_keys(backbone)
    must = {
        "conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean", "layer4.1.bn2.running_mean", "layer4.1.conv2.weight",
    }  # fmt: skip
    assert must <= keys
    if backbone == "resnet18":
        assert "layer1.0.downsample.0.weight" not in keys and "layer1.0.conv3.weight" not in keys
    else:
        assert {"layer1.0.conv3.weight", "layer1.0.downsample.0.weight", "layer3.5.bn3.weight", "layer4.2.conv3.weight"} <= keys
    assert not any(k.startswith("fc.") for k in keys)


# ----------------------------------------------------------------------------- pretrained weights


def random_torchvision_file(path, backbone="resnet18", deep_stem=False, drop=None, reshape=None, wrap=False):
    """A torchvision-style ResNet state dict with random values (plus fc.*), saved with torch.save."""
    g = torch.Generator().manual_seed(123)
    state = {}
    for key, value in ResNet(backbone, width=W, deep_stem=deep_stem).state_dict().items():
        if value.is_floating_point():
            state[key] = torch.randn(value.shape, generator=g) + (2.0 if key.endswith("running_var") else 0.0)
        else:
            state[key] = torch.full_like(value, 7)
    fc_in = W * 8 * (4 if backbone == "resnet50" else 1)
    state["fc.weight"] = torch.randn(1000, fc_in, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    if drop:
        del state[drop]
    if reshape:
        state[reshape] = torch.zeros(1, 1, 1, 1)
    torch.save({"state_dict": state} if wrap else state, path)
    return state


@pytest.mark.parametrize("backbone", BACKBONES)
def test_pretrained_weights_load_exactly(tmp_path, backbone):
    path = tmp_path / "imagenet.pth"
    state = random_torchvision_file(path, backbone)
    model = tiny("pspnet", backbone, pretrained=str(path))
    own = model.backbone.state_dict()
    assert set(own) == set(state) - {"fc.weight", "fc.bias"}
    for key, value in own.items():
        assert torch.equal(value, state[key]), key
    fresh = tiny("pspnet", backbone)
    assert not torch.equal(fresh.backbone.layer1[0].conv1.weight, model.backbone.layer1[0].conv1.weight)


def test_pretrained_file_wrapped_in_state_dict_key(tmp_path):
    path = tmp_path / "wrapped.pth"
    state = random_torchvision_file(path, wrap=True)
    model = tiny(pretrained=str(path))
    assert torch.equal(model.backbone.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])


def test_pretrained_missing_key_is_named(tmp_path):
    path = tmp_path / "missing.pth"
    random_torchvision_file(path, drop="layer3.1.bn2.running_var")
    with pytest.raises(DdcatError, match=r"lack key 'layer3\.1\.bn2\.running_var'") as info:
        tiny(pretrained=str(path))
    assert str(path) in str(info.value)


def test_pretrained_wrong_shape_is_named(tmp_path):
    path = tmp_path / "shape.pth"
    random_torchvision_file(path, reshape="layer2.0.conv1.weight")
    with pytest.raises(DdcatError, match=r"'layer2\.0\.conv1\.weight' has shape \(1, 1, 1, 1\)"):
        tiny(pretrained=str(path))


def test_pretrained_stem_mismatch_is_named(tmp_path):
    path = tmp_path / "plainstem.pth"
    random_torchvision_file(path, deep_stem=False)
    with pytest.raises(DdcatError, match=r"conv1\.weight"):
        tiny(deep_stem=True, pretrained=str(path))


def test_pretrained_bad_files(tmp_path):
    with pytest.raises(DdcatError, match="not found"):
        tiny(pretrained=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(DdcatError, match="junk.pth"):
        tiny(pretrained=str(junk))
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(DdcatError, match="state dict"):
        tiny(pretrained=str(listy))


def test_pretrained_through_training_config(tmp_path):
    """``--set model.pretrained=PATH`` reaches the trunk (lr ~0, so the weights barely move)."""
    from ddcat.checkpoint import load_checkpoint
    from ddcat.cli import main

    from conftest import tiny_sets

    path = tmp_path / "imagenet.pth"
    state = random_torchvision_file(path)
    out = tmp_path / "run"
    sets = tiny_sets(K, iters=1) + ["--set", f"model.pretrained={path}", "--set", "train.lr=0.000000000001", "--set", "train.weight_decay=0"]
    assert main(["train", "--no-progress", "--out", str(out), *sets]) == 0
    model_state = load_checkpoint(out / "last.pt")["model"]
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer2.0.downsample.0.weight"):
        torch.testing.assert_close(model_state[f"backbone.{key}"], state[key], rtol=0, atol=1e-6)
    # a bad pretrained file is a one-line error, and the output folder is not left behind
    bad = tmp_path / "bad.pth"
    random_torchvision_file(bad, drop="layer1.0.bn1.weight")
    out2 = tmp_path / "run2"
    sets = tiny_sets(K, iters=1) + ["--set", f"model.pretrained={bad}"]
    assert main(["train", "--no-progress", "--out", str(out2), *sets]) == 2
    assert not out2.exists()
    shutil.rmtree(out)


# ----------------------------------------------------------------------------- ddc vs plain


@pytest.mark.parametrize("arch", ARCHS)
def test_ddc_model_main_branch_equals_plain_model(arch):
    plain = tiny(arch, ddc=False, seed=1).eval()
    ddc = tiny(arch, ddc=True, seed=2).eval()
    missing, unexpected = ddc.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == []
    assert missing and all(k.startswith(("heads.auxiliary.", "heads.mask.")) for k in missing)
    x = images(2, 32, 32, seed=3)
    with torch.no_grad():
        assert torch.equal(ddc(x), plain(x))
        # the auxiliary head has its own (different) weights: it is not what eval returns
        assert not torch.allclose(ddc(x, heads=("auxiliary",))["auxiliary"], plain(x))


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("arch", ARCHS)
def test_ddc_parameter_count_minus_extra_heads_equals_plain(arch, backbone):
    plain = tiny(arch, backbone, ddc=False)
    ddc = tiny(arch, backbone, ddc=True)
    extra = sum(n_params(ddc.heads[h]) for h in DDC_EXTRA_HEADS)
    assert extra > 0
    assert n_params(ddc) - extra == n_params(plain)
    assert set(ddc.state_dict()) - set(plain.state_dict()) == {
        k for k in ddc.state_dict() if k.startswith(("heads.auxiliary.", "heads.mask."))
    }
    # f_a has the structure of f_n; f_m differs only in its 2 outputs
    assert n_params(ddc.heads["auxiliary"]) == n_params(ddc.heads["main"])
    assert ddc.heads["mask"][-1].out_channels == 2


def test_build_model_rejects_bad_arguments():
    with pytest.raises(DdcatError, match="unet"):
        build_model("unet", "resnet18", K, width=W)
    with pytest.raises(DdcatError, match="resnet7"):
        build_model("pspnet", "resnet7", K, width=W)
    with pytest.raises(DdcatError, match="colour"):
        build_model("pspnet", "resnet18", K, width=W, colour=True)
    with pytest.raises(DdcatError, match="output_stride"):
        build_model("pspnet", "resnet18", K, width=W, output_stride=4)


def test_model_vocabulary_is_the_configs():
    """The config lists the architectures and trunks (one source of truth); the models implement exactly those."""
    from ddcat.config import CHOICES
    from ddcat.models.resnet import SPECS

    assert tuple(SPECS) == CHOICES["model.backbone"]
    for arch in CHOICES["model.arch"]:
        assert build_model(arch, "resnet18", K, width=W).arch == arch
