"""Context modules and classifier heads of PSPNet and DeepLabv3.

The context module (pyramid pooling or ASPP) is shared; on top of it sit one or more
*classifier heads* of identical structure: the main head f_n, and for DDC-AT the auxiliary head
f_a (K outputs) and the mask head f_m (2 outputs). A deep-supervision head reads layer3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: the input plus pooled-and-upsampled maps at each bin size."""

    def __init__(self, cin: int, bins: tuple[int, ...] = (1, 2, 3, 6), align_corners: bool = False):
        super().__init__()
        reduced = cin // len(bins)
        self.bins = bins
        self.align_corners = align_corners  # the paper's code: True
        self.stages = nn.ModuleList(conv_bn_relu(cin, reduced, 1) for _ in bins)
        self.out_channels = cin + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(F.adaptive_avg_pool2d(x, b)), size, mode="bilinear", align_corners=self.align_corners)
            for b, stage in zip(self.bins, self.stages)
        ]
        return torch.cat([x, *pooled], dim=1)


class ASPP(nn.Module):
    """DeepLabv3's atrous spatial pyramid pooling: 1x1, three atrous 3x3 and image pooling, concatenated."""

    def __init__(self, cin: int, channels: int, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, channels, 1)] + [conv_bn_relu(cin, channels, 3, r) for r in rates])
        self.image_pool = conv_bn_relu(cin, channels, 1)
        self.out_channels = channels * (len(rates) + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))
        outs.append(pooled.expand(-1, -1, x.shape[-2], x.shape[-1]))
        return torch.cat(outs, dim=1)


class ClassifierHead(nn.Sequential):
    """conv (kernel 3 for PSPNet, 1 for DeepLabv3) -> BN -> ReLU -> Dropout2d -> conv1x1 -> ``cout``."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int = 3, dropout: float = 0.1):
        super().__init__(
            nn.Conv2d(cin, mid, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(mid, cout, 1),
        )
