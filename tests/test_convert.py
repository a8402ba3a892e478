"""``ddcat convert``: checkpoints of the paper's public code in, exactly.

Fixtures come from ``shared/reference/paper_code_state_keys.json`` (every key and shape of the paper
code's four models, ResNet-50, 21 classes): on the meta device at full size (the mapping and the
86.84 M parameters of PSPNet_DDCAT-50, no memory), and as real tensors on a narrow copy (every
channel count >= 64 divided by 8, the same key names) for the forward check. The paper code's
models are written out below with the paper's module names (semseg's ResNet with the deep base and
its layer3/layer4 dilation patch, PPM, ASPP, the heads), loaded strictly with the fixture, and
their logits on ImageNet-normalised images are compared with the converted ddcat model's on [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddcat.checkpoint import export_main_branch, load_model
from ddcat.cli import main
from ddcat.errors import DdcatError
from ddcat.models import build_model
from ddcat.models.paper_layout import describe, paper_name, strip_prefix, to_ddcat
from ddcat.models.resnet import ResNet, load_pretrained

KEYS_FILE = next(
    (p for p in (Path(__file__).resolve().parents[1] / "shared/reference/paper_code_state_keys.json",
                 Path("/work/shared/reference/paper_code_state_keys.json")) if p.is_file()),
    None,
)
pytestmark = pytest.mark.skipif(KEYS_FILE is None, reason="shared/reference/paper_code_state_keys.json not available")
MODELS = ("pspnet", "pspnet_ddcat", "deeplabv3", "deeplabv3_ddcat")
SCALE = 8
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def paper_keys(name: str) -> list[tuple[str, list[int]]]:
    return json.loads(KEYS_FILE.read_text())[name]


def narrow(shape: list[int]) -> list[int]:
    return [d // SCALE if d >= 64 else d for d in shape]


def fixture_state(name: str, scale: bool = True, seed: int = 0, classes: int = 21) -> dict[str, torch.Tensor]:
    """A random state dict with exactly the paper code's keys (``module.`` prefix); ``classes``
    replaces the JSON's 21 outputs of every classifier (the only tensors whose first dim is 21)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in paper_keys(name):
        shape = narrow(shape) if scale else shape
        if shape and shape[0] == 21:
            shape = [classes, *shape[1:]]
        if key.endswith("num_batches_tracked"):
            t = torch.tensor(7)
        elif key.endswith("running_var"):
            t = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BN weight
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # conv: He init keeps activations O(1) through 50 layers
            t = torch.randn(shape, generator=g) * (2 / (shape[1] * shape[2] * shape[3])) ** 0.5
        state[f"module.{key}"] = t
    return state


def paper_checkpoint(path: Path, name: str, state: dict | None = None) -> Path:
    torch.save({"epoch": 50, "state_dict": state or fixture_state(name), "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


# ------------------------------------------------------------------ the paper code, written out


class PaperBottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def paper_trunk(w: int) -> dict[str, nn.Module]:
    """semseg's resnet50(deep_base=True) as PSPNet takes it apart: layer0 and layer1..4, then the
    dilation patch of layer3 (2) and layer4 (4) on every conv2 and the downsample strides."""
    layer0 = nn.Sequential(
        nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
    )
    layers, inplanes = {}, 2 * w
    for i, (planes, blocks, stride) in enumerate([(w, 3, 1), (2 * w, 4, 2), (4 * w, 6, 2), (8 * w, 3, 2)], 1):
        down = None
        if stride != 1 or inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
        mods = [PaperBottleneck(inplanes, planes, stride, down)]
        inplanes = planes * 4
        mods += [PaperBottleneck(inplanes, planes) for _ in range(1, blocks)]
        layers[f"layer{i}"] = nn.Sequential(*mods)
    for name, rate in (("layer3", 2), ("layer4", 4)):
        for n, m in layers[name].named_modules():
            if "conv2" in n:
                m.dilation, m.padding, m.stride = (rate, rate), (rate, rate), (1, 1)
            elif "downsample.0" in n:
                m.stride = (1, 1)
    return {"layer0": layer0, **layers}


def head(cin: int, mid: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, mid, k, padding=k // 2, bias=False), nn.BatchNorm2d(mid), nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(mid, cout, 1))


class PaperPPM(nn.Module):
    def __init__(self, cin: int, red: int, bins=(1, 2, 3, 6)):
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, red, 1, bias=False), nn.BatchNorm2d(red), nn.ReLU()) for b in bins
        )

    def forward(self, x):
        return torch.cat([x] + [F.interpolate(f(x), x.shape[2:], mode="bilinear", align_corners=True) for f in self.features], 1)


class PaperASPP(nn.Module):
    def __init__(self, cin: int, c: int, rates=(6, 12, 18)):
        super().__init__()
        convs = [nn.Sequential(nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())]
        convs += [nn.Sequential(nn.Conv2d(cin, c, 3, padding=r, dilation=r, bias=False), nn.BatchNorm2d(c), nn.ReLU()) for r in rates]
        convs.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()))
        self.convs = nn.ModuleList(convs)

    def forward(self, x):
        outs = [conv(x) for conv in self.convs[:-1]]
        outs.append(F.interpolate(self.convs[-1](x), x.shape[2:], mode="bilinear", align_corners=False))
        return torch.cat(outs, 1)


class PaperModel(nn.Module):
    """PSPNet / PSPNet_DDCAT / DeepLabV3 / DeepLabV3_DDCAT of the paper's code, test-time forward."""

    def __init__(self, name: str, classes: int = 21, w: int = 64 // SCALE):
        super().__init__()
        for k, m in paper_trunk(w).items():
            setattr(self, k, m)
        c4, c3 = 32 * w, 16 * w
        ddc = name.endswith("_ddcat")
        main, aux = ("cls1", "aux_cls1") if ddc else ("cls", "aux")
        if name.startswith("pspnet"):
            self.ppm = PaperPPM(c4, c4 // 4)
            cin, mid, k, aux_k = 2 * c4, 8 * w, 3, 3
        else:
            self.aspp = PaperASPP(c4, 4 * w)
            cin, mid, k, aux_k = 5 * 4 * w, 4 * w, 1, 1
        setattr(self, main, head(cin, mid, classes, k))
        if ddc:
            self.mask1 = head(cin, mid, 2, k)
            self.cls2 = head(cin, mid, classes, k)
        setattr(self, aux, head(c3, 4 * w, classes, aux_k))
        self.main_name, self.aux_name, self.ddc = main, aux, ddc

    def forward(self, x):
        h, w = x.shape[2:]
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(x)))))
        x = self.ppm(x) if hasattr(self, "ppm") else self.aspp(x)
        return F.interpolate(getattr(self, self.main_name)(x), (h, w), mode="bilinear", align_corners=True)

    def forward_all(self, x) -> dict[str, torch.Tensor]:
        """The training forward of the paper code: every head, by its module name; the deep
        supervision head on layer3's output; each upsampled with align_corners=True."""
        h, w = x.shape[2:]
        x_tmp = self.layer3(self.layer2(self.layer1(self.layer0(x))))
        x = self.layer4(x_tmp)
        x = self.ppm(x) if hasattr(self, "ppm") else self.aspp(x)
        heads = [self.main_name, *(["cls2", "mask1"] if self.ddc else [])]
        out = {n: getattr(self, n)(x) for n in heads}
        out[self.aux_name] = getattr(self, self.aux_name)(x_tmp)
        return {n: F.interpolate(v, (h, w), mode="bilinear", align_corners=True) for n, v in out.items()}


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", MODELS)
def test_every_full_size_key_is_mapped_and_the_model_loads_strictly(name):
    """Full-size ResNet-50, 21 classes, on the meta device: describe() finds the model, every key of
    the paper's state dict is consumed and every ddcat key is filled with the same shape."""
    with torch.device("meta"):
        state = {k: torch.empty(s) for k, s in paper_keys(name)}
        spec = describe(state)
        model = build_model(spec["arch"], spec["backbone"], spec["num_classes"], ddc=spec["ddc"], **spec["options"])
    assert (spec["arch"], spec["backbone"], spec["num_classes"], spec["ddc"]) == (name.split("_")[0], "resnet50", 21, name.endswith("_ddcat"))
    assert spec["options"]["width"] == 64 and spec["options"]["stem_width"] == 64
    assert spec["options"]["deep_sup_kernel"] == (3 if name.startswith("pspnet") else 1)
    weights = to_ddcat(state, model.state_dict(), spec["ddc"])
    assert set(weights) == set(model.state_dict()) and len(weights) == len(state)
    model.load_state_dict(weights, strict=True, assign=True)


def test_pspnet_ddcat_50_has_86_84_million_parameters():
    with torch.device("meta"):
        state = {k: torch.empty(s) for k, s in paper_keys("pspnet_ddcat")}
        spec = describe(state)
        model = build_model(spec["arch"], spec["backbone"], spec["num_classes"], ddc=True, **spec["options"])
    n = sum(p.numel() for p in model.parameters())
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    n_paper = sum(torch.Size(s).numel() for k, s in paper_keys("pspnet_ddcat") if not k.endswith(buffers))
    assert n == n_paper and round(n / 1e6, 2) == 86.84


def test_paper_names_by_hand():
    assert paper_name("backbone.conv1.weight", False) == "layer0.0.weight"
    assert paper_name("backbone.bn3.running_var", True) == "layer0.7.running_var"
    assert paper_name("backbone.layer3.5.conv2.weight", True) == "layer3.5.conv2.weight"
    assert paper_name("context.stages.3.0.weight", False) == "ppm.features.3.1.weight"
    assert paper_name("context.branches.2.1.bias", False) == "aspp.convs.2.1.bias"
    assert paper_name("context.image_pool.1.weight", False) == "aspp.convs.4.2.weight"
    assert paper_name("heads.main.4.bias", True) == "cls1.4.bias"
    assert paper_name("heads.auxiliary.0.weight", True) == "cls2.0.weight"
    assert paper_name("heads.mask.4.weight", True) == "mask1.4.weight"
    assert paper_name("heads.deep_sup.1.weight", False) == "aux.1.weight"
    assert paper_name("heads.deep_sup.1.weight", True) == "aux_cls1.1.weight"
    with pytest.raises(KeyError):
        paper_name("heads.auxiliary.0.weight", False)


@pytest.mark.parametrize("name", MODELS)
def test_converted_logits_equal_the_paper_code_forward(name, tmp_path):
    state = fixture_state(name)
    paper = PaperModel(name)
    paper.load_state_dict(strip_prefix(state), strict=True)  # the test's paper model has exactly the JSON's keys
    src = paper_checkpoint(tmp_path / "paper.pth", name, state)
    out = tmp_path / "converted.pt"
    assert main(["convert", str(src), str(out)]) == 0
    model, ckpt = load_model(out)
    assert ckpt["config"]["protocol"] == "paper" and ckpt["config"]["data"]["name"] == "voc"
    assert ckpt["converted_from"]["epoch"] == 50
    assert model.ddc == name.endswith("_ddcat")
    images = torch.rand(2, 3, 33, 33, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.eval()(images)
        theirs = paper.eval()((images - MEAN) / STD)
    assert ours.shape == theirs.shape == (2, 21, 33, 33)
    assert theirs.abs().max() > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())


def no_dropout(model: nn.Module) -> nn.Module:
    """Dropout off (its masks are random) and everything else as the model's mode says."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", MODELS)
def test_every_head_equals_the_paper_code_in_train_and_eval_mode(name, mode, tmp_path):
    """f_a (cls2), f_m (mask1) and the deep-supervision head (aux / aux_cls1, on layer3) as well as
    f_n: in train mode (BatchNorm on batch statistics, dropout off in both) and in eval mode."""
    state = fixture_state(name, seed=2)
    paper = PaperModel(name)
    paper.load_state_dict(strip_prefix(state), strict=True)
    assert main(["convert", str(paper_checkpoint(tmp_path / "paper.pth", name, state)), str(tmp_path / "c.pt")]) == 0
    model, _ = load_model(tmp_path / "c.pt")
    ddc = name.endswith("_ddcat")
    ours_of = {"main": "cls1" if ddc else "cls", "deep_sup": "aux_cls1" if ddc else "aux", **({"auxiliary": "cls2", "mask": "mask1"} if ddc else {})}
    images = torch.rand(3, 3, 33, 33, generator=torch.Generator().manual_seed(3))
    model.train(mode == "train"), paper.train(mode == "train")
    with torch.no_grad():
        ours = no_dropout(model)(images, heads=tuple(ours_of)) if mode == "eval" else no_dropout(model)(images)
        theirs = no_dropout(paper).forward_all((images - MEAN) / STD)
    assert set(ours) == set(ours_of) and set(theirs) == set(ours_of.values())
    for head_name, paper_name_ in ours_of.items():
        a, b = ours[head_name], theirs[paper_name_]
        assert a.shape == b.shape == (3, 2 if head_name == "mask" else 21, 33, 33)
        assert b.abs().max() > 1e-3 and b.std() > 1e-3, head_name  # not a degenerate comparison
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item(), msg=lambda m, h=head_name: f"{h}: {m}")
    if mode == "train":  # the heads differ from each other: a swapped mapping would be seen
        assert not torch.allclose(ours["main"], ours["deep_sup"]) and (not ddc or not torch.allclose(ours["main"], ours["auxiliary"]))


def test_converted_checkpoint_exports_and_serves_as_transfer_source(tmp_path, capsys):
    src = paper_checkpoint(tmp_path / "paper.pth", "pspnet_ddcat")
    out = tmp_path / "c.pt"
    assert main(["convert", str(src), str(out), "--set", "data.root=/data/VOC2012"]) == 0
    ckpt = torch.load(out, weights_only=True)
    spec = ckpt["model_spec"]
    cfg = ckpt["config"]
    assert capsys.readouterr().out == (f"wrote {out} ({spec['arch']} {spec['backbone']}, 21 classes with DDC-AT's f_a and f_m; config from "
                                       f"{ckpt['converted_from']['base_config']}: voc, protocol: paper, crop {cfg['train']['crop_size']})\n")
    assert ckpt["config"]["train"]["method"] == "ddcat" and ckpt["config"]["data"]["root"] == "/data/VOC2012"
    assert ckpt["model_spec"]["options"]["dilation"] == "paper"
    export_main_branch(out, tmp_path / "plain.pt")
    plain, _ = load_model(tmp_path / "plain.pt")
    assert not plain.ddc and "auxiliary" not in plain.heads
    from ddcat.evaluation import load_inference_model

    load_inference_model(out, ckpt["config"], "cpu", expect={"num_classes": 21})  # what --transfer-from does


# the paper code's training crop per dataset (REFERENCE: VOC 473, Cityscapes 449) and the literature's
# ADE20K crop 512; the preset's test-time base size (semseg's VOC 512, the DDC-AT code's Cityscapes 1024)
@pytest.mark.parametrize("name, classes, dataset, crop, base_size, score_at, scales", [
    ("pspnet_ddcat", 21, "voc", 473, 512, "input", (0.5, 2.0)),
    ("deeplabv3", 21, "voc", 473, 512, "input", (0.5, 2.0)),
    ("pspnet", 19, "cityscapes", 449, 1024, "base", (0.25, 1.0)),
    ("deeplabv3_ddcat", 19, "cityscapes", 449, 1024, "base", (0.25, 1.0)),
    ("pspnet_ddcat", 150, "ade20k", 512, 0, "input", (0.5, 2.0)),
    ("deeplabv3", 150, "ade20k", 512, 0, "input", (0.5, 2.0)),
])
def test_converted_config_has_the_papers_crop_and_evaluation(tmp_path, capsys, name, classes, dataset, crop, base_size, score_at, scales):
    """The embedded config starts from the dataset's packaged config: the crop the paper trained at,
    and `ddcat eval` scores in windows of that size with the paper code's test-time protocol
    (not the built-in 64 px default)."""
    from ddcat.evaluation.run import eval_config, on_inference_path

    src = paper_checkpoint(tmp_path / "paper.pth", name, fixture_state(name, classes=classes))
    assert main(["convert", str(src), str(tmp_path / "c.pt")]) == 0
    assert f"{dataset}_{name.split('_')[0]}.yaml" in capsys.readouterr().out
    model, ckpt = load_model(tmp_path / "c.pt")
    cfg = ckpt["config"]
    assert (cfg["protocol"], cfg["data"]["name"], cfg["data"]["num_classes"]) == ("paper", dataset, classes)
    assert cfg["train"]["crop_size"] == crop and cfg["eval"]["crop_size"] == crop
    assert (cfg["data"]["scale_min"], cfg["data"]["scale_max"]) == scales
    assert cfg["train"]["method"] == ("ddcat" if name.endswith("_ddcat") else "clean")
    e = cfg["eval"]
    assert (e["mode"], e["flip"], e["average"], e["pad"], e["base_size"], e["score_at"]) == ("slide", True, "softmax", "mean", base_size, score_at)
    assert ckpt["converted_from"]["base_config"].endswith(f"configs/{dataset}_{name.split('_')[0]}.yaml")
    wrapped = on_inference_path(model, eval_config(ckpt, []), "cpu")  # what ddcat eval runs
    assert (wrapped.crop, wrapped.base_size, wrapped.average) == (crop, base_size, "softmax")


def test_dataset_and_config_choose_the_base_and_mistakes_are_one_line_errors(tmp_path, capsys):
    src = paper_checkpoint(tmp_path / "paper.pth", "pspnet", fixture_state("pspnet", classes=7))
    out = tmp_path / "c.pt"
    assert main(["convert", str(src), str(out)]) == 2  # 7 classes: no dataset known
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "7 classes" in err and "--dataset" in err and "--config" in err and not out.exists()
    own = tmp_path / "mine.yaml"
    own.write_text("protocol: paper\ndata:\n  name: list\n  num_classes: 7\ntrain:\n  crop_size: 321\neval:\n  mode: slide\n")
    assert main(["convert", str(src), str(out), "--config", str(own), "--set", "data.root=/d"]) == 0
    cfg = torch.load(out, weights_only=True)["config"]
    assert (cfg["data"]["name"], cfg["data"]["root"], cfg["train"]["crop_size"], cfg["model"]["dilation"]) == ("list", "/d", 321, "paper")
    for args, message in [
        (["--dataset", "voc"], "has 7 classes but the base config (--dataset voc"),
        (["--dataset", "coco"], "--dataset must be one of voc, cityscapes, ade20k, got 'coco'"),
        (["--dataset", "voc", "--config", str(own)], "give --config or --dataset, not both"),
        (["--config", str(tmp_path / "none.yaml")], "config file not found"),
        (["--config", str(own), "--set", "model.arch=deeplabv3"], "--set may not change the converted model"),
    ]:
        assert main(["convert", str(src), str(tmp_path / "x.pt"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ddcat: error: ") and err.count("\n") == 1 and message in err, (args, err)
        assert not (tmp_path / "x.pt").exists()
    src21 = paper_checkpoint(tmp_path / "p21.pth", "deeplabv3")  # 21 classes named as VOC explicitly: the same as inferred
    assert main(["convert", str(src21), str(tmp_path / "a.pt"), "--dataset", "voc"]) == 0
    assert main(["convert", str(src21), str(tmp_path / "b.pt")]) == 0
    assert torch.load(tmp_path / "a.pt", weights_only=True)["config"] == torch.load(tmp_path / "b.pt", weights_only=True)["config"]


def test_bare_state_dict_without_prefix(tmp_path):
    state = strip_prefix(fixture_state("deeplabv3"))
    torch.save(state, tmp_path / "bare.pth")
    assert main(["convert", str(tmp_path / "bare.pth"), str(tmp_path / "c.pt")]) == 0
    assert load_model(tmp_path / "c.pt")[0].arch == "deeplabv3"


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"module.cls.5.weight": torch.zeros(3)}), "key 'cls.5.weight' is not a parameter"),
    (lambda s: s.pop("module.ppm.features.2.2.running_var"), "key 'ppm.features.2.2.running_var' is missing"),
    (lambda s: s.update({"module.layer2.1.conv1.weight": torch.zeros(1, 2, 1, 1)}), "key 'layer2.1.conv1.weight' has shape [1, 2, 1, 1]"),
    (lambda s: s.update({"cls.4.bias": torch.zeros(21)}), "key 'cls.4.bias' lacks the 'module.' prefix"),
    (lambda s: s.pop("module.ppm.features.0.1.weight"), "not a checkpoint of the paper code"),
])
def test_a_key_added_removed_or_reshaped_is_a_one_line_error(tmp_path, capsys, change, message):
    state = fixture_state("pspnet")
    change(state)
    src = paper_checkpoint(tmp_path / "paper.pth", "pspnet", state)
    out = tmp_path / "c.pt"
    assert main(["convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddcat: error: ") and err.count("\n") == 1 and message in err and str(src) in err
    assert not out.exists() and not list(tmp_path.glob(".c.pt*"))


def test_refuses_overwrite_and_code(tmp_path, capsys):
    src = paper_checkpoint(tmp_path / "paper.pth", "pspnet")
    (tmp_path / "c.pt").write_bytes(b"x")
    assert main(["convert", str(src), str(tmp_path / "c.pt")]) == 2
    assert "--overwrite" in capsys.readouterr().err

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"state_dict": {"a": torch.zeros(1)}, "x": Evil()}, tmp_path / "evil.pth")
    assert main(["convert", str(tmp_path / "evil.pth"), str(tmp_path / "e.pt")]) == 2
    assert "Python objects" in capsys.readouterr().err


def test_semseg_imagenet_initialisation_loads_through_model_pretrained(tmp_path):
    """resnet50_v2.pth (semseg's deep-base ImageNet weights) names the stem conv1/bn1/conv2/... and
    has an fc: the paper preset's trunk loads it; a paper-code checkpoint's layer0 layout loads too."""
    trunk = {k[len("module."):]: v for k, v in fixture_state("pspnet").items() if k.startswith("module.layer")}
    stem = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}
    semseg = {}
    for k, v in trunk.items():
        if k.startswith("layer0."):
            _, idx, rest = k.split(".", 2)
            semseg[f"{stem[idx]}.{rest}"] = v
        else:
            semseg[k] = v
    semseg["fc.weight"], semseg["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    torch.save(semseg, tmp_path / "resnet50_v2.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in trunk.items()}}, tmp_path / "paper_trunk.pth")
    for file in ("resnet50_v2.pth", "paper_trunk.pth"):
        resnet = ResNet("resnet50", width=8, deep_stem=True, stem_width=8, dilation="paper")
        load_pretrained(resnet, tmp_path / file)
        assert torch.equal(resnet.conv2.weight, trunk["layer0.3.weight"]) and torch.equal(resnet.layer4[2].bn3.running_var, trunk["layer4.2.bn3.running_var"])


def test_describe_rejects_what_is_not_the_paper_code():
    with pytest.raises(DdcatError, match="not a checkpoint of the paper code"):
        describe({"backbone.conv1.weight": torch.zeros(1)})


@pytest.mark.parametrize("source", ["pspnet_ddcat", "pspnet"])
def test_converted_checkpoint_initialises_fine_tuning_with_ddcat(tmp_path, source):
    """model.pretrained naming a converted (ddcat) checkpoint loads every weight; a plain source
    fine-tuned as DDC-AT gets fresh f_a / f_m and every other weight from the file."""
    src = paper_checkpoint(tmp_path / "paper.pth", source)
    out = tmp_path / "c.pt"
    assert main(["convert", str(src), str(out)]) == 0
    ckpt = torch.load(out, weights_only=True)
    model = build_model("pspnet", "resnet50", 21, ddc=True, pretrained=str(out), **ckpt["model_spec"]["options"])
    own = model.state_dict()
    for key, value in ckpt["model"].items():
        assert torch.equal(own[key], value), key
    assert source.endswith("_ddcat") or not any(k.startswith("heads.auxiliary.") for k in ckpt["model"])
    with pytest.raises(DdcatError, match="has shape"):
        build_model("pspnet", "resnet50", 21, ddc=True, pretrained=str(out), **{**ckpt["model_spec"]["options"], "head_channels": 32})


def test_fine_tune_a_converted_model_with_method_ddcat(tmp_path, voc_run):
    """`ddcat train --method ddcat --set model.pretrained=CONVERTED` runs (one iteration, VOC fixture)."""
    from conftest import voc_sets

    root, _ = voc_run
    src = paper_checkpoint(tmp_path / "paper.pth", "pspnet_ddcat")
    assert main(["convert", str(src), str(tmp_path / "c.pt")]) == 0
    options = torch.load(tmp_path / "c.pt", weights_only=True)["model_spec"]["options"]
    sets = [f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
    rc = main(["train", "--no-progress", "--method", "ddcat", "--out", str(tmp_path / "ft"), *voc_sets(root),
               "--set", "model.backbone=resnet50", "protocol=paper", f"model.pretrained={tmp_path / 'c.pt'}", *sets])
    assert rc == 0 and (tmp_path / "ft" / "last.pt").is_file()
