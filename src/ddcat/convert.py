"""``ddcat convert SRC OUT``: a checkpoint of the paper's public code -> an ordinary ddcat checkpoint.

The source is what the paper's training scripts save, ``{'epoch', 'state_dict', 'optimizer'}`` with
DataParallel's ``module.`` prefix (a bare state dict, with or without the prefix, is accepted too),
read with ``weights_only=True``. Which of the four models it is (PSPNet, PSPNet_DDCAT, DeepLabV3,
DeepLabV3_DDCAT; ResNet-18/50/101; any class count and width) is read from its keys and shapes
(:func:`ddcat.models.paper_layout.describe`); the weights are renamed by
:func:`~ddcat.models.paper_layout.paper_name`, every source key consumed and every model key present
with its shape (otherwise a one-line error naming the key: never a silent ``strict=False``).

The result has ``format: ddcat`` and an own-model spec (:class:`ddcat.checkpoint.OwnModelSpec`: the
paper code's layout is translated to ddcat's names here, so no third kind of checkpoint exists) with
the paper code's trunk and heads (``protocol: paper``'s model keys), so ``ddcat eval``, ``ddcat export``, :func:`ddcat.checkpoint.load_model` and
``--transfer-from`` take it unchanged; in eval mode its logits on images in [0, 1] equal the paper
code's forward on the same images normalised with the ImageNet mean and std. A DDC-AT source keeps
f_a and f_m (``ddcat export`` drops them). Its config is ``protocol: paper`` on the dataset the class
count suggests (21 -> voc, 19 -> cityscapes, 150 -> ade20k, else list), overridable with ``--set``.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from ddcat.checkpoint import FORMAT, VERSION, OwnModelSpec, atomic_save
from ddcat.config import load_config
from ddcat.errors import DdcatError
from ddcat.models.paper_layout import describe, strip_prefix, to_ddcat
from ddcat.models.segmenter import MODEL_OPTIONS

#: class count -> the dataset its checkpoint was most likely trained on
DATASET_OF = {21: "voc", 19: "cityscapes", 150: "ade20k"}


def read_paper_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict (prefix stripped) of a paper-code checkpoint and what else it says (``epoch``)."""
    path = Path(path)
    if not path.is_file():
        raise DdcatError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DdcatError(f"checkpoint {path} holds Python objects beyond tensors and plain data; it was not loaded") from None
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt / foreign file
        raise DdcatError(f"checkpoint {path} is corrupt or not a torch checkpoint ({type(exc).__name__})") from None
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        raise DdcatError(f"checkpoint {path} is already a ddcat checkpoint")
    info: dict[str, Any] = {}
    state = raw
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        state = raw["state_dict"]
        if isinstance(raw.get("epoch"), int):
            info["epoch"] = raw["epoch"]
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DdcatError(f"checkpoint {path} holds no state dict (expected {{'epoch', 'state_dict', 'optimizer'}} or a state dict of tensors)")
    try:
        return strip_prefix(state), info
    except DdcatError as exc:
        raise DdcatError(f"checkpoint {path}: {exc}") from None


def convert_paper_checkpoint(src: str | Path, dst: str | Path, sets: Sequence[str] = ()) -> dict[str, Any]:
    """Convert ``src`` (the paper code's layout) and write ``dst`` atomically; returns the checkpoint.
    Nothing is written when any key or shape does not fit."""
    state, info = read_paper_state(src)
    try:
        spec = describe(state)
        weights = to_ddcat(state, OwnModelSpec(spec).skeleton(), spec["ddc"])
    except DdcatError as exc:
        raise DdcatError(f"checkpoint {src}: {exc}") from None
    o = spec["options"]
    base = [
        "protocol=paper", f"model.arch={spec['arch']}", f"model.backbone={spec['backbone']}",
        f"data.name={DATASET_OF.get(spec['num_classes'], 'list')}", f"data.num_classes={spec['num_classes']}",
        *(["train.method=ddcat"] if spec["ddc"] else []),  # a plain source: SAT or clean, the user says (--set)
        *(f"model.{k}={str(o[k]).lower() if isinstance(o[k], bool) else o[k]}" for k in MODEL_OPTIONS),
    ]
    cfg = load_config(None, [*base, *sets])
    if any(cfg["model"][k] != o[k] for k in MODEL_OPTIONS) or cfg["model"]["arch"] != spec["arch"] or cfg["data"]["num_classes"] != spec["num_classes"]:
        raise DdcatError("--set may not change the converted model (model.* keys, data.num_classes): they are read from the checkpoint")
    ckpt = {
        "format": FORMAT, "version": VERSION, "model_spec": spec, "model": weights, "config": cfg,
        "converted_from": {"path": str(src), "layout": "paper-code", **info},
    }
    OwnModelSpec(spec).check_state(weights, dst)  # the spec ddcat will rebuild it from, checked before writing
    atomic_save(ckpt, dst)
    return ckpt
