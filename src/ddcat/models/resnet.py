"""ResNet-18/50/101 trunks for segmentation.

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer4.2.downsample.0``) so that an ImageNet state dict saved from torchvision loads directly
(see :func:`load_pretrained`). Two options from the segmentation literature:

- ``deep_stem``: the stem is three 3x3 convolutions (``conv1``/``bn1``, ``conv2``/``bn2``,
  ``conv3``/``bn3``) instead of one 7x7. Their widths are ``stem_width``, ``stem_width``,
  ``2 * stem_width`` and layer1 reads ``2 * stem_width`` channels; the paper's code (semseg's
  ``deep_base``) has ``stem_width=64`` (64-64-128); ``stem_width=0`` keeps ddcat's historical
  ``width // 2`` -> ``width`` (32-32-64 at width 64);
- ``output_stride`` 8 or 16: the last one or two stages keep their resolution and use dilated
  convolutions instead (layer3 dilation 2 and layer4 dilation 4 at stride 8);
- ``dilation``: ``"torchvision"`` (torchvision's ``replace_stride_with_dilation``: the first block
  of a dilated stage keeps the previous stage's rate, 1 in layer3 and 2 in layer4) or ``"paper"``
  (the paper's code sets dilation = padding = 2 / 4 in *every* block's 3x3 conv of layer3 / layer4).
  Both have the same parameters, so a state dict loads into either.

``width`` scales every stage (64 is the standard network); small widths make the tiny models of
the test suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddcat.config import CHOICES
from ddcat.errors import DdcatError
from ddcat.models.paper_layout import HEADS_DDC, HEADS_PLAIN, strip_prefix, trunk_state
from ddcat.models.state import mismatch_message


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)  # stride on the 3x3, as torchvision
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


SPECS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}


class ResNet(nn.Module):
    """A ResNet without the classifier; :meth:`forward` returns the layer3 and layer4 maps."""

    def __init__(
        self,
        depth: str = "resnet50",
        width: int = 64,
        deep_stem: bool = False,
        output_stride: int = 8,
        stem_width: int = 0,
        dilation: str = "torchvision",
    ):
        super().__init__()
        if depth not in SPECS:
            raise DdcatError(f"unknown backbone '{depth}'; valid: {', '.join(SPECS)}")
        # the config's rules, checked here too for Python callers of the trunk (one vocabulary: CHOICES)
        for key, value in (("model.output_stride", output_stride), ("model.dilation", dilation)):
            if value not in CHOICES[key]:
                raise DdcatError(f"{key} must be one of {', '.join(map(str, CHOICES[key]))}, got {value!r}")
        if stem_width < 0:
            raise DdcatError(f"model.stem_width must be >= 0, got {stem_width}")
        block, layers = SPECS[depth]
        self.deep_stem = deep_stem
        self.dilation_convention = dilation
        self.relu = nn.ReLU(inplace=True)
        stem_out = width
        if deep_stem:
            first = stem_width or width // 2
            stem_out = 2 * stem_width if stem_width else width
            self.conv1 = conv3x3(3, first, stride=2)
            self.bn1 = nn.BatchNorm2d(first)
            self.conv2 = conv3x3(first, first)
            self.bn2 = nn.BatchNorm2d(first)
            self.conv3 = conv3x3(first, stem_out)
            self.bn3 = nn.BatchNorm2d(stem_out)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilate3 = output_stride == 8
        dilate4 = output_stride in (8, 16)
        self._cin, self._dilation = stem_out, 1
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2, dilate=dilate3)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2, dilate=dilate4)
        self.channels3 = width * 4 * block.expansion
        self.channels4 = width * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._cin != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self._cin, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion))
        first_dilation = self._dilation if self.dilation_convention == "paper" else previous_dilation
        layers = [block(self._cin, planes, stride, first_dilation, downsample)]
        self._cin = planes * block.expansion
        layers += [block(self._cin, planes, 1, self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer2(self.layer1(self.stem(x)))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)


def read_weights(path: str | Path) -> Any:
    """The object a weights file holds, read with ``weights_only=True`` (one-line errors)."""
    path = Path(path)
    if not path.is_file():
        raise DdcatError(f"pretrained weights not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DdcatError(f"cannot read pretrained weights {path}: {type(exc).__name__}") from None


#: First name of every trunk key in ddcat's (torchvision / semseg) naming: the 7x7 or deep stem, layer1-4.
TRUNK_MODULES = frozenset({"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "layer1", "layer2", "layer3", "layer4"})
#: Keys of a known layout that are not the trunk and are not loaded: the ImageNet classifier ``fc``
#: (torchvision, semseg, robustness, RobustBench) and the paper code's segmentation heads.
NOT_LOADED = frozenset({"fc", "ppm", "aspp", *HEADS_PLAIN.values(), *HEADS_DDC.values()})
#: A wrapped classifier: the ``robustness`` library's AttackerModel (``model.*``, its attacker's copy
#: ``attacker.*`` and input normaliser ``normalizer.*``) or RobustBench's ``normalize_model``
#: (``model.*`` and ``normalize.*``). The normalisers hold ImageNet's mean and std, which ddcat's
#: Segmenter applies itself; they and the attacker's copy are not loaded.
WRAPPED_MODEL = "model."
WRAPPER_BUFFERS = ("attacker.", "normalizer.", "normalize.")
KNOWN_LAYOUTS = "torchvision / semseg ResNet, the paper code, ddcat, robustness, RobustBench"


def published_trunk(state: dict, path: Path) -> dict[str, Any]:
    """The trunk of a state dict in one of the known layouts, in ddcat's names: DataParallel's
    ``module.`` goes, a wrapped classifier's ``model.`` goes (its ``attacker.*`` / ``normalizer.*`` /
    ``normalize.*`` are dropped), the paper code's ``layer0.{0,1,3,4,6,7}`` become ``conv1`` ..
    ``bn3``, ``fc.*`` and the paper code's heads are dropped. A key of none of these layouts (in a
    wrapped file: any key outside ``model.*`` and the wrapper's buffers) is a one-line error naming
    the file and the first such key as the file spells it."""
    if not all(isinstance(k, str) for k in state):
        raise DdcatError(f"pretrained weights {path} do not hold a state dict")
    try:
        names = dict(zip(strip_prefix(state), state))  # name without `module.` -> the file's
        unknown = []
        if any(k.startswith(WRAPPED_MODEL) for k in names):
            unknown = [src for k, src in names.items() if not k.startswith((WRAPPED_MODEL, *WRAPPER_BUFFERS))]
            names = {k[len(WRAPPED_MODEL):]: src for k, src in names.items() if k.startswith(WRAPPED_MODEL)}
        renamed = trunk_state(names)  # the paper layout's stem; name -> the file's
    except DdcatError as exc:
        raise DdcatError(f"pretrained weights {path}: {exc}") from None
    unknown += [src for k, src in renamed.items() if k.split(".")[0] not in TRUNK_MODULES | NOT_LOADED]
    if unknown:
        first = min(unknown, key=list(state).index)
        raise DdcatError(f"pretrained weights {path}: key '{first}' is in none of the known layouts ({KNOWN_LAYOUTS})")
    trunk = {k: state[src] for k, src in renamed.items() if k.split(".")[0] in TRUNK_MODULES}
    bad = next((src for k, src in renamed.items() if k in trunk and not isinstance(trunk[k], torch.Tensor)), None)
    if bad is not None:
        raise DdcatError(f"pretrained weights {path}: key '{bad}' does not hold a tensor")
    return trunk


def load_pretrained(resnet: ResNet, path: str | Path, state: Any = None) -> None:
    """Load an ImageNet state dict saved from a torchvision ResNet (``fc.*`` is ignored), semseg's
    deep-base ``resnet50_v2.pth`` (the paper code's initialisation), a paper-code checkpoint's trunk,
    a ddcat checkpoint's trunk, or a robust ImageNet ResNet of the ``robustness`` library
    (``{"model": {"module.model.*", "module.attacker.*", "module.normalizer.*"}, "epoch": ...}``) or
    of RobustBench (``model.*``, ``normalize.*``): see :func:`published_trunk`.

    Every key of the trunk must be present with the same shape; otherwise the error names the
    first key that is missing or differs (e.g. a deep-stem trunk with a 7x7-stem file). ``state``:
    the file's content when the caller has read it already (:func:`read_weights`).
    """
    path = Path(path)
    if state is None:
        state = read_weights(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "model_spec" in state:
        # a ddcat checkpoint or `ddcat export` file (a robust model for PIR-AT): its trunk
        state = {k[len("backbone."):]: v for k, v in state["model"].items() if k.startswith("backbone.")}
    elif isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # the robustness library's {"model": ..., "epoch": ...}
    if not isinstance(state, dict):
        raise DdcatError(f"pretrained weights {path} do not hold a state dict")
    state = published_trunk(state, path)
    own = resnet.state_dict()
    problem = mismatch_message(state, own, missing=" lack key '{key}' (deep_stem/width/backbone mismatch?)",
                               shape=": key '{key}' has shape {have}, model expects {want}")
    if problem is not None:
        raise DdcatError(f"pretrained weights {path}{problem}")
    resnet.load_state_dict({k: state[k] for k in own}, strict=True)
