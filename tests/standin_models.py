"""Stand-ins for third-party segmentation networks (no torchvision install), and their factories.

Importable as ``standin_models`` by the tests (pytest puts tests/ on sys.path) and by CLI runs
given ``model.factory: standin_models:<function>``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import nn


def _trunk(width: int) -> nn.Sequential:
    """3 stride-2 conv blocks: features at 1/8 of the input."""
    layers, cin = [], 3
    for _ in range(3):
        layers += [nn.Conv2d(cin, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
    return nn.Sequential(*layers)


class TorchvisionStyle(nn.Module):
    """torchvision's segmentation convention (``_SimpleSegmentationModel``): ``backbone``,
    ``classifier`` (conv-BN-ReLU-conv, at 1/8), optional ``aux_classifier``; returns
    ``OrderedDict(out=..., aux=...)``, both upsampled bilinearly to the input size."""

    def __init__(self, num_classes: int = 4, aux: bool = False, width: int = 8):
        super().__init__()
        self.backbone = _trunk(width)
        self.classifier = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, num_classes, 1)
        )
        self.aux_classifier = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, num_classes, 1)) if aux else None

    def forward(self, x):
        size = x.shape[-2:]
        feats = self.backbone(x)
        result = OrderedDict()
        result["out"] = F.interpolate(self.classifier(feats), size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            result["aux"] = F.interpolate(self.aux_classifier(feats), size=size, mode="bilinear", align_corners=False)
        return result


class EighthResolution(nn.Module):
    """A plain module returning a (N, K, H/8, W/8) tensor; its classifier is a bare Conv2d."""

    def __init__(self, num_classes: int = 4, width: int = 8):
        super().__init__()
        self.trunk = _trunk(width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        return self.head(self.trunk(x))


class TupleOutput(EighthResolution):
    """Returns a tuple: an output the adapter cannot read without ``output=callable``."""

    def forward(self, x):
        return (super().forward(x),)


class ScaledHead(EighthResolution):
    """Its logits are 2x the ``head`` output: ``head`` is not the module that produces the logits."""

    def forward(self, x):
        return 2 * super().forward(x)


class SumOfTwo(nn.Module):
    """LRASPP-like head: the logits are the sum of two convs on different features."""

    def __init__(self, num_classes: int = 4, width: int = 8):
        super().__init__()
        self.low = nn.Conv2d(3, num_classes, 1)
        self.high = nn.Conv2d(width, num_classes, 1)

    def forward(self, low, high):
        return F.interpolate(self.low(low), size=high.shape[-2:], mode="bilinear", align_corners=False) + self.high(high)


class TwoPath(EighthResolution):
    def __init__(self, num_classes: int = 4, width: int = 8):
        super().__init__(num_classes, width)
        self.head = SumOfTwo(num_classes, width)

    def forward(self, x):
        return self.head(x, self.trunk(x))


def torchvision_style(num_classes: int = 4, aux: bool = False, width: int = 8) -> nn.Module:
    return TorchvisionStyle(num_classes, aux, width)


def eighth(num_classes: int = 4, width: int = 8) -> nn.Module:
    return EighthResolution(num_classes, width)


def tuple_output(num_classes: int = 4) -> nn.Module:
    return TupleOutput(num_classes)


def not_a_module() -> str:
    return "a string"
