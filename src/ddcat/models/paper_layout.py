"""The paper code's parameter names (semseg / DDC-AT's ``PSPNet``, ``PSPNet_DDCAT``, ``DeepLabV3``,
``DeepLabV3_DDCAT``) and ddcat's: a pure, name-based mapping, and the model a state dict describes.

The paper's code (Xu, Zhao, Jia; built on hszhao/semseg) names its modules

- trunk ``layer0`` = Sequential(conv1, bn1, relu, conv2, bn2, relu, conv3, bn3, relu, maxpool) (keys
  ``layer0.{0,1,3,4,6,7}``), ``layer1`` .. ``layer4`` in torchvision's Bottleneck naming;
- PSPNet's pyramid pooling ``ppm.features.{i}`` = Sequential(AdaptiveAvgPool2d, conv, BN, ReLU)
  (keys ``.1`` conv, ``.2`` BN); DeepLabV3's ``aspp.convs.{0..3}`` = Sequential(conv, BN, ReLU) and
  ``aspp.convs.4`` = Sequential(AdaptiveAvgPool2d, conv, BN, ReLU) (image pooling);
- heads Sequential(conv, BN, ReLU, Dropout2d, conv) (keys ``.0``, ``.1``, ``.4``): ``cls`` / ``aux``
  in the plain models, ``cls1`` (f_n, the main head), ``cls2`` (f_a), ``mask1`` (f_m, 2 outputs) and
  ``aux_cls1`` (deep supervision) in the DDC-AT ones.

ddcat's :class:`~ddcat.models.segmenter.Segmenter` with the paper code's options (``protocol: paper``:
deep stem 64-64-128, dilation in every block, ``align_corners``) has exactly these parameters under
other names. :func:`paper_name` maps a ddcat key to the paper's (one rule per module, no lookup
table of 386 keys); :func:`describe` reads arch / backbone / widths / classes / DDC-AT from the keys
and shapes. Checkpoints written by that code hold ``{'epoch', 'state_dict', 'optimizer'}`` with
DataParallel's ``module.`` prefix (:func:`strip_prefix`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ddcat.errors import DdcatError

#: ddcat's deep-stem modules -> the index in the paper's ``layer0`` Sequential.
STEM = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
#: ddcat head -> the paper's module name, plain model and DDC-AT model.
HEADS_PLAIN = {"main": "cls", "deep_sup": "aux"}
HEADS_DDC = {"main": "cls1", "auxiliary": "cls2", "mask": "mask1", "deep_sup": "aux_cls1"}
#: (blocks in layer3, bottleneck) -> trunk
TRUNKS = {(6, True): "resnet50", (23, True): "resnet101", (2, False): "resnet18"}
PREFIX = "module."


def paper_name(key: str, ddc: bool) -> str:
    """The paper code's name of ddcat's parameter or buffer ``key`` (of a Segmenter built with
    ``deep_stem=True``). Raises KeyError for a key the paper's models do not have."""
    parts = key.split(".")
    if parts[0] == "backbone":
        if parts[1] in STEM:
            return ".".join(["layer0", str(STEM[parts[1]]), *parts[2:]])
        if parts[1].startswith("layer"):
            return ".".join(parts[1:])
    elif parts[0] == "context":
        kind, rest = parts[1], parts[2:]
        if kind == "stages":  # PyramidPooling.stages[i] = (conv, BN, ReLU); the paper's has the pool first
            return ".".join(["ppm.features", rest[0], str(int(rest[1]) + 1), *rest[2:]])
        if kind == "branches":  # ASPP: 1x1 and the three atrous convs, (conv, BN, ReLU)
            return ".".join(["aspp.convs", *rest])
        if kind == "image_pool":  # ASPP image pooling, the paper's aspp.convs.4 = (pool, conv, BN, ReLU)
            return ".".join(["aspp.convs.4", str(int(rest[0]) + 1), *rest[1:]])
    elif parts[0] == "heads":
        names = HEADS_DDC if ddc else HEADS_PLAIN
        if parts[1] in names:
            return ".".join([names[parts[1]], *parts[2:]])
    raise KeyError(key)


def strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict without DataParallel's ``module.`` prefix (all keys have it, or none)."""
    prefixed = [k.startswith(PREFIX) for k in state]
    if any(prefixed) and not all(prefixed):
        first = next(k for k, p in zip(state, prefixed) if not p)
        raise DdcatError(f"key '{first}' lacks the '{PREFIX}' prefix the other keys have")
    return {k[len(PREFIX):]: v for k, v in state.items()} if any(prefixed) else dict(state)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise DdcatError(f"key '{key}' is missing: not a checkpoint of the paper code's PSPNet / DeepLabV3")
    return tuple(state[key].shape)


def describe(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ddcat model spec (arch, backbone, num_classes, ddc, options) of a paper-code state dict
    (without the ``module.`` prefix), read from its keys and shapes; the options are the paper
    code's (``protocol: paper``). A state dict of none of the four models is a one-line error."""
    if "ppm.features.0.1.weight" in state:
        arch = "pspnet"
    elif "aspp.convs.0.0.weight" in state:
        arch = "deeplabv3"
    else:
        raise DdcatError("neither 'ppm.features.0.1.weight' (PSPNet) nor 'aspp.convs.0.0.weight' (DeepLabV3) is present: not a checkpoint of the paper code")
    ddc = "cls1.0.weight" in state
    head = "cls1" if ddc else "cls"
    deep_sup = "aux_cls1" if ddc else "aux"
    blocks3 = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    bottleneck = "layer1.0.conv3.weight" in state
    trunk = TRUNKS.get((len(blocks3), bottleneck))
    if trunk is None:
        raise DdcatError(f"layer3 has {len(blocks3)} {'bottleneck' if bottleneck else 'basic'} blocks: not a ResNet-18/50/101 trunk")
    classes = _shape(state, f"{head}.4.weight")[0]
    options = {
        "width": _shape(state, "layer1.0.conv1.weight")[0],
        "deep_stem": True,
        "output_stride": 8,
        "head_channels": _shape(state, f"{head}.0.weight")[0],
        "dropout": 0.1,
        "stem_width": _shape(state, "layer0.0.weight")[0],
        "dilation": "paper",
        "align_corners": True,
        "deep_sup_kernel": _shape(state, f"{deep_sup}.0.weight")[-1],
    }
    return {"arch": arch, "backbone": trunk, "num_classes": classes, "ddc": ddc, "options": options}


def to_ddcat(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], ddc: bool) -> dict[str, torch.Tensor]:
    """``state`` (paper names, no prefix) renamed to the keys of ``expected`` (a ddcat model's state
    dict, e.g. on the meta device). Every source key must be consumed and every expected key
    present with its shape: otherwise a one-line error naming the paper-side key."""
    names = {paper_name(k, ddc): k for k in expected}
    unknown = [k for k in state if k not in names]
    if unknown:
        raise DdcatError(f"key '{unknown[0]}' is not a parameter of the paper code's {'DDC-AT ' if ddc else ''}model"
                         f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}")
    out = {}
    for src, dst in names.items():
        if src not in state:
            raise DdcatError(f"key '{src}' is missing")
        have, want = tuple(state[src].shape), tuple(expected[dst].shape)
        if have != want:
            raise DdcatError(f"key '{src}' has shape {list(have)}, the model expects {list(want)}")
        out[dst] = state[src]
    return out


def trunk_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A trunk state dict in ddcat's (torchvision / semseg ``resnet50_v2.pth``) names: a paper-code
    checkpoint's ``layer0.{0,1,3,4,6,7}`` become ``conv1`` .. ``bn3``, DataParallel's ``module.``
    goes; other keys (``layer1``.., semseg's ``conv1``.., ``fc``) pass unchanged."""
    stem = {str(i): name for name, i in STEM.items()}
    out = {}
    for key, value in strip_prefix(state).items():
        parts = key.split(".")
        if parts[0] == "layer0" and len(parts) > 2 and parts[1] in stem:
            key = ".".join([stem[parts[1]], *parts[2:]])
        out[key] = value
    return out
