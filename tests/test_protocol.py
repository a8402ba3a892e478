"""The paper code's full-scale protocol (issue 12, docs/protocol.md): every option against an
independent computation, the paper trunk against the paper code's block table, the preset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddcat.attacks import BIM
from ddcat.config import DEFAULTS, load_config
from ddcat.data.transforms import MEAN_FILL, TrainTransform, pad_to, rotate
from ddcat.evaluation.engine import Setting, evaluate
from ddcat.evaluation.inference import InferencePath, base_shape, inference_model, resize_labels
from ddcat.metrics import metrics_from_confusion
from ddcat.models import build_model
from ddcat.models.resnet import ResNet, load_pretrained

ROOT = Path(__file__).resolve().parents[1]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)


def context_model(k: int = 4) -> torch.nn.Module:
    """A tiny model with spatial context (so windows, flips and padding change its output)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(6, k, 5, padding=2)
    ).eval()


# ----------------------------------------------------------------------------- references (semseg's test.py in numpy)


def ref_net_process(model, crop: np.ndarray, flip: bool, softmax: bool) -> np.ndarray:
    """One (C, h, w) crop -> (K, h, w): softmax (or logits) of the crop, flipped twin averaged in."""
    with torch.no_grad():
        out = model(torch.from_numpy(crop)[None].float())[0]
        if flip:
            twin = model(torch.from_numpy(crop[:, :, ::-1].copy())[None].float())[0].flip(2)
    if softmax:
        out = F.softmax(out, 0)
        twin = F.softmax(twin, 0) if flip else None
    return ((out + twin) / 2 if flip else out).numpy().astype(np.float64)


def ref_scale_process(model, image: np.ndarray, crop: int, flip: bool, softmax: bool, pad_mean: bool, stride_rate=2 / 3):
    """semseg's scale_process on a (C, H, W) image: pad (centred mean or bottom/right zero), grid, average, cut."""
    c, ori_h, ori_w = image.shape
    pad_h, pad_w = max(crop - ori_h, 0), max(crop - ori_w, 0)
    top, left = (int(pad_h / 2), int(pad_w / 2)) if pad_mean else (0, 0)
    padded = np.empty((c, ori_h + pad_h, ori_w + pad_w), dtype=np.float32)
    padded[:] = MEAN.view(3, 1, 1).numpy() if pad_mean else 0.0
    padded[:, top : top + ori_h, left : left + ori_w] = image
    new_h, new_w = padded.shape[1:]
    stride = int(np.ceil(crop * stride_rate))
    grid_h = int(np.ceil(float(new_h - crop) / stride) + 1)
    grid_w = int(np.ceil(float(new_w - crop) / stride) + 1)
    total, count = None, np.zeros((new_h, new_w))
    for ih in range(grid_h):
        for iw in range(grid_w):
            e_h = min(ih * stride + crop, new_h)
            s_h = e_h - crop
            e_w = min(iw * stride + crop, new_w)
            s_w = e_w - crop
            out = ref_net_process(model, padded[:, s_h:e_h, s_w:e_w], flip, softmax)
            total = np.zeros((out.shape[0], new_h, new_w)) if total is None else total
            total[:, s_h:e_h, s_w:e_w] += out
            count[s_h:e_h, s_w:e_w] += 1
    return (total / count)[:, top : top + ori_h, left : left + ori_w]


# ----------------------------------------------------------------------------- flip, averaging, padding


@pytest.mark.parametrize("average", ["softmax", "logits"])
def test_flip_is_the_mean_of_the_image_and_its_mirror(average):
    model = context_model()
    x = torch.rand(2, 3, 20, 27)
    out = InferencePath(model, crop=0, flip=True, average=average)(x)
    a, b = model(x), model(x.flip(3)).flip(3)
    if average == "softmax":
        expect = (F.softmax(a, 1) + F.softmax(b, 1)) / 2
        assert torch.allclose(out.exp(), expect, atol=1e-6)
        assert torch.allclose(F.softmax(out, 1), expect, atol=1e-6)  # log-probabilities: softmax gives them back
    else:
        assert torch.allclose(out, (a + b) / 2, atol=1e-6)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("average", ["softmax", "logits"])
@pytest.mark.parametrize("pad", ["mean", "zero"])
@pytest.mark.parametrize("size", [(45, 70), (20, 31)])  # windows overlap / image smaller than a window
def test_sliding_window_equals_semseg_scale_process(flip, average, pad, size):
    model = context_model()
    x = torch.rand(1, 3, *size)
    out = InferencePath(model, crop=32, stride_rate=2 / 3, flip=flip, pad=pad, average=average)(x)
    ref = ref_scale_process(model, x[0].numpy(), 32, flip, average == "softmax", pad == "mean")
    got = out[0].exp() if average == "softmax" else out[0]
    assert got.shape == ref.shape
    assert np.allclose(got.detach().numpy(), ref, atol=1e-5)


def test_softmax_and_logit_averaging_differ_where_windows_overlap():
    model = context_model()
    x = torch.rand(1, 3, 45, 70)
    soft = InferencePath(model, crop=32, average="softmax")(x)
    logit = InferencePath(model, crop=32, average="logits")(x)
    assert not torch.allclose(F.softmax(soft, 1), F.softmax(logit, 1), atol=1e-4)
    single = InferencePath(model, crop=0, average="softmax")(x)  # one window: both are the model's softmax
    assert torch.allclose(F.softmax(single, 1), F.softmax(model(x), 1), atol=1e-6)


class Spy(torch.nn.Module):
    """A pointwise model that records the windows it sees."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.conv(x)


def test_mean_padding_is_centred_holds_the_mean_colour_and_is_cut_away():
    spy = Spy().eval()
    x = torch.rand(1, 3, 21, 26)
    out = InferencePath(spy, crop=32, pad="mean")(x)
    (window,) = spy.seen
    top, left = (32 - 21) // 2, (32 - 26) // 2  # semseg: int(pad / 2) above / left, the rest below / right
    assert window.shape == (1, 3, 32, 32)
    assert torch.equal(window[:, :, top : top + 21, left : left + 26], x)  # the image, untouched
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[top : top + 21, left : left + 26] = True
    for c in range(3):
        assert torch.all(window[0, c][~inside] == MEAN[0, c, 0, 0])  # every padded pixel is the mean colour
    assert torch.allclose(out, spy.conv(x), atol=1e-6)  # the padding is cut away again
    spy.seen.clear()
    InferencePath(spy, crop=32, pad="zero")(x)
    assert torch.equal(spy.seen[0][:, :, :21, :26], x) and spy.seen[0][:, :, 21:].abs().sum() == 0


# ----------------------------------------------------------------------------- base size


@pytest.mark.parametrize(("h", "w", "base", "expect"), [(500, 375, 512, (512, 384)), (1024, 2048, 1024, (512, 1024)), (333, 500, 512, (341, 512))])
def test_base_shape_is_semseg_long_side_rule(h, w, base, expect):
    assert base_shape(h, w, base) == expect  # new_h = base if h > w, short side = round(base / long * short)


def test_base_size_resizes_predicts_and_resizes_back():
    model = context_model()
    x = torch.rand(1, 3, 30, 40)
    out = InferencePath(model, crop=0, base_size=56, average="softmax")(x)
    xb = F.interpolate(x, (42, 56), mode="bilinear", align_corners=False)  # long side 56, short round(56 * 30 / 40)
    ref = F.interpolate(F.softmax(model(xb), 1), (30, 40), mode="bilinear", align_corners=False)
    assert out.shape == (1, 4, 30, 40)
    assert torch.allclose(out.exp(), ref, atol=1e-6)


def test_resize_labels_is_nearest_with_floor_indices():
    labels = torch.arange(6 * 8).view(1, 6, 8)
    got = resize_labels(labels, (4, 5))
    rows = [math.floor(i * 6 / 4) for i in range(4)]  # cv2.INTER_NEAREST: source index floor(dst * scale)
    cols = [math.floor(j * 8 / 5) for j in range(5)]
    assert torch.equal(got[0], labels[0][rows][:, cols])


class PairDataset:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def confusion(pred: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    keep = label != 255
    return np.bincount(k * label[keep].astype(np.int64) + pred[keep], minlength=k * k).reshape(k, k)


@pytest.mark.parametrize("score_at", ["base", "input"])
def test_base_size_metric_is_computed_on_the_right_ground_truth(score_at):
    """score_at=base: image and labels resized (the paper's Cityscapes 1024x512); input: prediction resized back."""
    k = 4
    model = context_model(k)
    torch.manual_seed(1)
    images = [torch.rand(3, 24, 40) for _ in range(2)]
    labels = [torch.randint(0, k, (24, 40)) for _ in range(2)]
    labels[0][:3] = 255
    path = InferencePath(model, crop=16, flip=True, pad="mean", average="softmax", base_size=20, score_at=score_at)
    (record,) = evaluate(path, PairDataset(images, labels), [Setting()], k, torch.device("cpu"), batch_size=1, progress=False)
    ref = np.zeros((k, k), dtype=np.int64)
    for x, y in zip(images, labels):
        xb = F.interpolate(x[None], (12, 20), mode="bilinear", align_corners=False)
        prob = torch.from_numpy(ref_scale_process(model, xb[0].numpy(), 16, True, True, True))[None]
        if score_at == "base":
            rows, cols = [math.floor(i * 24 / 12) for i in range(12)], [math.floor(j * 40 / 20) for j in range(20)]
            gt = y[rows][:, cols].numpy()
        else:
            prob, gt = F.interpolate(prob, (24, 40), mode="bilinear", align_corners=False), y.numpy()
        ref += confusion(prob[0].argmax(0).numpy(), gt, k)
    assert record["num_pixels"] == ref.sum()
    assert record["mIoU"] == pytest.approx(metrics_from_confusion(torch.from_numpy(ref))["mIoU"], abs=1e-12)
    assert record["num_pixels"] == (12 * 20 * 2 - 2 * 20 if score_at == "base" else 24 * 40 * 2 - 3 * 40)  # rows 0, 2 of 0..2 ignored


# ----------------------------------------------------------------------------- the attack through the whole path


def test_attack_through_flip_window_and_base_size_stays_in_the_original_eps_ball():
    model = context_model()
    path = InferencePath(model, crop=16, flip=True, pad="mean", average="softmax", base_size=20, score_at="input")
    x = torch.rand(1, 3, 30, 40)
    y = torch.randint(0, 4, (1, 30, 40))
    eps = 0.03
    adv = BIM(eps, 0.01, 3)(path, x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= eps + 1e-6  # the eps-ball of the original image's pixels
    moved = (adv - x).abs().amax(1)[0] > 0
    assert moved[:15, :20].any() and moved[15:, 20:].any()  # the gradient reaches every window through the resize
    ce = lambda z: F.cross_entropy(path(z), y).item()  # noqa: E731
    assert ce(adv) > ce(x)


def test_attack_per_crop_equals_attacking_each_window_on_its_own():
    model = context_model()
    path = InferencePath(model, crop=16, flip=True, pad="mean", average="softmax", attack_per_crop=True)
    x = torch.rand(1, 3, 12, 28)  # padded to 16 x 28, three windows in width
    y = torch.randint(0, 4, (1, 12, 28))
    attack = BIM(0.03, 0.01, 2)
    got = path.forward_attacked_per_crop(attack, x, y).exp()
    # reference: pad image (mean) and labels (255), attack every window through flip + softmax, average
    top = (16 - 12) // 2
    xp = torch.ones(1, 3, 16, 28) * MEAN
    xp[:, :, top : top + 12] = x
    yp = torch.full((1, 16, 28), 255, dtype=torch.long)
    yp[:, top : top + 12] = y
    window = InferencePath(model, crop=0, flip=True, average="softmax")
    total, count = torch.zeros(1, 4, 16, 28), torch.zeros(16, 28)
    for left in (0, 11, 12):  # ceil(16 * 2/3) = 11: 0, 11, then flush with the end at 12
        adv = attack(window, xp[:, :, :, left : left + 16], yp[:, :, left : left + 16])
        with torch.no_grad():
            total[:, :, :, left : left + 16] += window(adv).exp()
        count[:, left : left + 16] += 1
    ref = (total / count)[:, :, top : top + 12]
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, path(x).exp(), atol=1e-3)  # and it is not the clean prediction


def test_engine_uses_the_per_crop_attack_when_asked():
    k = 4
    model = context_model(k)
    images, labels = [torch.rand(3, 12, 28)], [torch.randint(0, k, (12, 28))]
    attack = BIM(0.03, 0.01, 2)
    path = inference_model(model, "slide", 16, 2 / 3, flip=True, pad="mean", average="softmax", attack_per_crop=True)
    recs = evaluate(path, PairDataset(images, labels), [Setting(), Setting("bim", attack, 2, 0.03)], k, torch.device("cpu"), progress=False)
    pred = path.forward_attacked_per_crop(attack, images[0][None], labels[0][None]).argmax(1)
    ref = metrics_from_confusion(torch.from_numpy(confusion(pred[0].numpy(), labels[0].numpy(), k)))
    assert recs[1]["mIoU"] == pytest.approx(ref["mIoU"], abs=1e-12)


# ----------------------------------------------------------------------------- the paper's trunk

# The paper code's PSPNet-R50 (semseg model/resnet.py deep_base + model/pspnet.py): the stem is
# conv3x3(3, 64, stride 2), conv3x3(64, 64), conv3x3(64, 128); layer1 reads 128 channels; pspnet.py then
# sets in layer3 every 'conv2' to dilation = padding = (2, 2), stride (1, 1) and 'downsample.0' to
# stride (1, 1), and in layer4 every 'conv2' to (4, 4) and 'downsample.0' to stride (1, 1).
PAPER_STEM = {"conv1": (3, 64, 2), "conv2": (64, 64, 1), "conv3": (64, 128, 1)}  # in, out, stride
PAPER_BLOCKS = {  # layer: (blocks, conv2 dilation = padding, conv2 stride of block 0, downsample stride)
    "layer1": (3, 1, 1, 1),
    "layer2": (4, 1, 2, 2),
    "layer3": (6, 2, 1, 1),
    "layer4": (3, 4, 1, 1),
}


def test_paper_trunk_matches_the_paper_code_block_by_block():
    net = ResNet("resnet50", deep_stem=True, stem_width=64, dilation="paper")
    for name, (cin, cout, stride) in PAPER_STEM.items():
        conv = getattr(net, name)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (cin, cout, (3, 3), (stride, stride), (1, 1))
    assert net.layer1[0].conv1.in_channels == 128 and net.layer1[0].downsample[0].in_channels == 128
    for layer, (blocks, dil, stride0, ds_stride) in PAPER_BLOCKS.items():
        seq = getattr(net, layer)
        assert len(seq) == blocks
        for i, block in enumerate(seq):
            assert block.conv2.dilation == (dil, dil) and block.conv2.padding == (dil, dil), (layer, i)
            assert block.conv2.stride == ((stride0, stride0) if i == 0 else (1, 1)), (layer, i)
            assert block.conv1.dilation == (1, 1) and block.conv3.dilation == (1, 1)
        assert seq[0].downsample[0].stride == (ds_stride, ds_stride)
    tv = ResNet("resnet50", deep_stem=True, stem_width=64, dilation="torchvision")  # the first block differs
    assert tv.layer3[0].conv2.dilation == (1, 1) and tv.layer4[0].conv2.dilation == (2, 2)
    assert tv.layer3[1].conv2.dilation == (2, 2) and tv.layer4[1].conv2.dilation == (4, 4)
    historical = ResNet("resnet50", deep_stem=True)  # stem_width 0 = ddcat's 32-32-64
    assert (historical.conv1.out_channels, historical.conv3.out_channels, historical.layer1[0].conv1.in_channels) == (32, 64, 64)


def paper_pspnet(num_classes: int = 21, arch: str = "pspnet"):
    return build_model(
        arch, "resnet50", num_classes, ddc=True, deep_stem=True, stem_width=64, dilation="paper", align_corners=True,
        deep_sup_kernel=1 if arch == "deeplabv3" else 3,
    )


def test_paper_pspnet_r50_ddc_has_the_paper_codes_parameters_and_flops():
    from torch.utils.flop_counter import FlopCounterMode

    model = paper_pspnet(21)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2) == 86.84  # PSPNet-R50 DDC in the paper's code (issue 12)
    assert n == 86_844_161
    model.train()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(torch.rand(2, 3, 97, 97))  # a training forward: every head
    assert set(out) == {"main", "auxiliary", "mask", "deep_sup"}
    assert round(2 * counter.get_total_flops() / 1e9, 2) == 115.06  # 4 x 97 x 97 in the paper's code


def test_deeplabv3_deep_supervision_head_is_1x1_in_the_paper():
    model = build_model("deeplabv3", "resnet18", 5, width=8, deep_sup_kernel=1)
    assert model.heads["deep_sup"][0].kernel_size == (1, 1)
    assert build_model("deeplabv3", "resnet18", 5, width=8).heads["deep_sup"][0].kernel_size == (3, 3)


@pytest.mark.parametrize("align", [True, False])
def test_align_corners_is_used_by_the_upsampling(align):
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", 3, width=8, align_corners=align).eval()
    x = torch.rand(1, 3, 33, 33)
    with torch.no_grad():
        _, c4 = model.backbone((x - model.mean) / model.std)
        size = c4.shape[-2:]
        pooled = [F.interpolate(stage(F.adaptive_avg_pool2d(c4, b)), size, mode="bilinear", align_corners=align)
                  for b, stage in zip(model.context.bins, model.context.stages)]
        low = model.heads["main"](torch.cat([c4, *pooled], 1))
        expect = F.interpolate(low, (33, 33), mode="bilinear", align_corners=align)
        assert torch.allclose(model(x), expect, atol=1e-5)


def test_a_torchvision_named_state_dict_loads_into_the_paper_trunk(tmp_path):
    """semseg's resnet50_v2.pth has torchvision's names (conv1..3, bn1..3, layerN.M.*, downsample.0/1, fc)."""
    torch.manual_seed(0)
    source = ResNet("resnet50", deep_stem=True, stem_width=64, dilation="torchvision")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    expected_shapes = {
        "conv1.weight": (64, 3, 3, 3), "conv2.weight": (64, 64, 3, 3), "conv3.weight": (128, 64, 3, 3), "bn3.weight": (128,),
        "layer1.0.conv1.weight": (64, 128, 1, 1), "layer1.0.downsample.0.weight": (256, 128, 1, 1),
        "layer3.0.conv2.weight": (256, 256, 3, 3), "layer4.2.conv3.weight": (2048, 512, 1, 1), "layer4.0.downsample.1.running_mean": (2048,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # ImageNet classifier: ignored
    path = tmp_path / "resnet50_v2.pth"
    torch.save(state, path)
    paper = ResNet("resnet50", deep_stem=True, stem_width=64, dilation="paper")
    load_pretrained(paper, path)
    for key, value in paper.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_old_checkpoint_specs_without_the_new_options_build_the_historical_model():
    from ddcat.checkpoint import build_from_spec, spec_from_config

    old = {"arch": "pspnet", "backbone": "resnet18", "num_classes": 3, "ddc": False,
           "options": {"width": 8, "deep_stem": True, "output_stride": 8, "head_channels": 0, "dropout": 0.1}}
    model = build_from_spec(old)
    assert model.backbone.conv1.out_channels == 4 and model.backbone.layer3[0].conv1.dilation == (1, 1)
    assert model.align_corners is False and model.heads["deep_sup"][0].kernel_size == (3, 3)
    cfg = load_config(ROOT / "configs" / "voc_pspnet.yaml")
    spec = spec_from_config(cfg, ddc=True)
    assert {"stem_width": 64, "dilation": "paper", "align_corners": True, "deep_sup_kernel": 3}.items() <= spec["options"].items()


# ----------------------------------------------------------------------------- preset and config


PAPER_ROWS = {
    "model.deep_stem": True, "model.stem_width": 64, "model.dilation": "paper", "model.align_corners": True,
    "data.fill": "mean", "data.rotate_prob": 0.5,
    "eval.mode": "slide", "eval.flip": True, "eval.pad": "mean", "eval.average": "softmax", "eval.attack_per_crop": False,
}


def value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(
    ("name", "base", "score_at", "ds_kernel"),
    [("voc_pspnet", 512, "input", 3), ("voc_deeplabv3", 512, "input", 1), ("cityscapes_pspnet", 1024, "base", 3), ("cityscapes_deeplabv3", 1024, "base", 1)],
)
def test_the_four_paper_configs_set_every_row_of_the_table(name, base, score_at, ds_kernel):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg["protocol"] == "paper"
    for key, want in PAPER_ROWS.items():
        assert value(cfg, key) == want, key
    assert (cfg["eval"]["base_size"], cfg["eval"]["score_at"], cfg["model"]["deep_sup_kernel"]) == (base, score_at, ds_kernel)
    assert cfg["eval"]["crop_size"] == cfg["train"]["crop_size"] and (cfg["eval"]["crop_size"] - 1) % 8 == 0


def test_synthetic_defaults_keep_the_fast_historical_protocol():
    cfg = load_config(ROOT / "configs" / "synthetic.yaml")
    assert cfg["protocol"] == "default"
    for key in PAPER_ROWS:
        assert value(cfg, key) == value(DEFAULTS, key), key
    assert inference_model(torch.nn.Identity(), "whole", 64, 2 / 3) .__class__ is torch.nn.Identity


def test_explicit_keys_beat_the_preset_and_the_preset_follows_the_dataset():
    cfg = load_config(ROOT / "configs" / "voc_pspnet.yaml", ["eval.flip=false", "data.name=cityscapes", "data.num_classes=19"])
    assert cfg["eval"]["flip"] is False and cfg["eval"]["pad"] == "mean"
    assert (cfg["eval"]["base_size"], cfg["eval"]["score_at"]) == (1024, "base")
    off = load_config(ROOT / "configs" / "voc_pspnet.yaml", ["protocol=default"])
    assert off["eval"]["flip"] is False and off["model"]["dilation"] == "torchvision"


def test_set_takes_several_pairs_after_one_flag():
    from ddcat.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "o", "--set", "train.iters=3", "train.batch_size=2", "--set", "seed=4"])
    assert args.set == ["train.iters=3", "train.batch_size=2", "seed=4"]
    cfg = load_config(None, args.set)
    assert (cfg["train"]["iters"], cfg["train"]["batch_size"], cfg["seed"]) == (3, 2, 4)


# ----------------------------------------------------------------------------- training fill and rotation probability


def test_mean_fill_in_padding_and_rotation():
    image = np.full((10, 12, 3), 7, np.uint8)
    label = np.ones((10, 12), np.uint8)
    img, lab = pad_to(image, label, 14, 12, fill=MEAN_FILL)
    assert img.shape == (14, 12, 3) and (img[:2] == MEAN_FILL).all() and (img[12:] == MEAN_FILL).all() and (img[2:12] == 7).all()
    assert (lab[:2] == 255).all() and (lab[2:12] == 1).all()
    img, lab = rotate(np.full((40, 40, 3), 7, np.uint8), np.ones((40, 40), np.uint8), 45.0, fill=MEAN_FILL)
    assert tuple(img[0, 0]) == MEAN_FILL and lab[0, 0] == 255 and tuple(img[20, 20]) == (7, 7, 7)
    assert MEAN_FILL == tuple(round(m * 255) for m in (0.485, 0.456, 0.406))


def test_rotate_prob():
    rng = np.random.default_rng(0)
    never = TrainTransform(32, rotate=10.0, rotate_prob=0.0)
    assert all(never.params(rng)["angle"] == 0.0 for _ in range(50))
    half = TrainTransform(32, rotate=10.0, rotate_prob=0.5)
    rotated = sum(half.params(rng)["angle"] != 0.0 for _ in range(2000))
    assert 900 < rotated < 1100
    a = TrainTransform(32, rotate=10.0, rotate_prob=1.0).params(np.random.default_rng(3))
    b = TrainTransform(32, rotate=10.0).params(np.random.default_rng(3))  # the historical stream is unchanged
    assert a == b and a["angle"] != 0.0
    with pytest.raises(ValueError):
        TrainTransform(32, fill="grey")


# ----------------------------------------------------------------------------- mAcc conventions


def test_both_macc_conventions():
    m = torch.tensor([[2, 2, 0], [0, 3, 0], [0, 1, 0]])  # class 2 has ground truth but no hit; add an absent class:
    m4 = torch.zeros(4, 4, dtype=torch.int64)
    m4[:3, :3] = m
    r = metrics_from_confusion(m4)
    assert r["mAcc"] == pytest.approx((2 / 4 + 3 / 3 + 0 / 1) / 3)  # classes present in the ground truth
    assert r["mAcc_all"] == pytest.approx((2 / 4 + 3 / 3 + 0 / 1 + 0) / 4)  # all K, absent counts 0 (paper code)


def test_flip_prediction_is_attacked_through_both_branches():
    model = context_model()
    path = InferencePath(model, crop=0, flip=True, average="softmax")
    x = torch.rand(1, 3, 16, 20, requires_grad=True)
    y = torch.randint(0, 4, (1, 16, 20))
    (grad,) = torch.autograd.grad(F.cross_entropy(path(x), y), x)
    x2 = x.detach().clone().requires_grad_(True)
    both = torch.log((F.softmax(model(x2), 1) + F.softmax(model(x2.flip(3)), 1).flip(3)) / 2)
    (ref,) = torch.autograd.grad(F.nll_loss(both, y), x2)
    assert torch.allclose(grad, ref, atol=1e-6)
    x3 = x.detach().clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(F.cross_entropy(model(x3), y), x3)
    assert not torch.allclose(grad, plain, atol=1e-4)  # the flipped branch contributes


def test_cli_eval_with_the_paper_options(tmp_path, clean_run):
    """End to end: every test-time option, per-crop attack, base-size labels; both mAcc conventions written."""
    import json

    from ddcat.cli import main

    out = tmp_path / "eval"
    sets = ["protocol=paper", "eval.base_size=24", "eval.score_at=base", "eval.crop_size=17", "eval.attack_per_crop=true"]
    rc = main(["eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--attack", "bim", "--steps", "1", "--set", *sets, "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mAcc", "mAcc_all", "mIoU", "mIoU_all", "macc_convention"} <= set(metrics)
    assert metrics["config"]["eval"]["flip"] is True and metrics["config"]["eval"]["pad"] == "mean"
    from ddcat.data import build_dataset

    val = build_dataset(metrics["config"], "val")  # scored on the labels resized to the base size (32 -> 24)
    expected = sum(int((resize_labels(val[i][1][None], (24, 24)) != 255).sum()) for i in range(len(val)))
    assert len(val) == 4 and metrics["records"][0]["num_pixels"] == metrics["records"][1]["num_pixels"] == expected
    assert "mAcc_all" in (out / "table.txt").read_text()
