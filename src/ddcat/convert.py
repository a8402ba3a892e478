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
f_a and f_m (``ddcat export`` drops them).

Its config starts from the packaged config of the dataset the checkpoint was trained on
(``configs/{voc,cityscapes,ade20k}_{pspnet,deeplabv3}.yaml``: crop 473 / 449 / 512 and, through
``protocol: paper``, the paper code's evaluation: windows of the crop size, base-size resize, flip,
softmax averaging). The dataset is read from the class count (21 -> voc, 19 -> cityscapes, 150 ->
ade20k) or named with ``dataset`` (``--dataset``), or the base is the user's own file (``config``,
``--config``); any other class count needs one of the two. The model keys (``model.*``) and
``data.num_classes`` are the checkpoint's; ``--set`` may change any other key.
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
from ddcat.experiment_file import packaged_config
from ddcat.models.paper_layout import describe, strip_prefix, to_ddcat
from ddcat.models.segmenter import MODEL_OPTIONS

#: class count -> the dataset its checkpoint was most likely trained on (whose packaged config is the base)
DATASET_OF = {21: "voc", 19: "cityscapes", 150: "ade20k"}
DATASETS = tuple(DATASET_OF.values())


def base_config(spec: dict[str, Any], config: str | Path | None = None, dataset: str | None = None) -> tuple[Path, str]:
    """The config file a converted checkpoint's config starts from, and what chose it (for messages):
    ``config`` as given, else the packaged ``{dataset}_{arch}.yaml`` of ``dataset`` or of the
    dataset the class count names. Both given, an unknown dataset, or a class count that names no
    dataset without either is a :class:`DdcatError`."""
    k = spec["num_classes"]
    if config is not None and dataset is not None:
        raise DdcatError("give --config or --dataset, not both (--config names the whole base config)")
    if config is not None:
        return Path(config), f"--config {config}"
    if dataset is None:
        dataset = DATASET_OF.get(k)
        if dataset is None:
            known = ", ".join(f"{n} = {d}" for n, d in DATASET_OF.items())
            raise DdcatError(
                f"the checkpoint has {k} classes, which names no dataset ({known}): pass --dataset "
                f"{'|'.join(DATASETS)} or --config FILE (your dataset's crop and evaluation settings)"
            )
        how = f"{k} classes -> {dataset}"
    elif dataset not in DATASETS:
        raise DdcatError(f"--dataset must be one of {', '.join(DATASETS)}, got '{dataset}' (other data: --config FILE)")
    else:
        how = f"--dataset {dataset}"
    return packaged_config(f"{dataset}_{spec['arch']}.yaml"), how


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


def convert_paper_checkpoint(
    src: str | Path, dst: str | Path, sets: Sequence[str] = (), config: str | Path | None = None, dataset: str | None = None
) -> dict[str, Any]:
    """Convert ``src`` (the paper code's layout) and write ``dst`` atomically; returns the checkpoint.
    ``config`` / ``dataset``: the base of its config (:func:`base_config`); ``sets``: ``--set``
    overrides on top. Nothing is written when any key or shape does not fit."""
    state, info = read_paper_state(src)
    try:
        spec = describe(state)
        weights = to_ddcat(state, OwnModelSpec(spec).skeleton(), spec["ddc"])
    except DdcatError as exc:
        raise DdcatError(f"checkpoint {src}: {exc}") from None
    o, k = spec["options"], spec["num_classes"]
    file, how = base_config(spec, config, dataset)
    file_classes = load_config(file)["data"]["num_classes"]
    if file_classes != k:
        raise DdcatError(f"checkpoint {src} has {k} classes but the base config ({how}: {file}) has data.num_classes {file_classes}")
    base = [
        f"model.arch={spec['arch']}", f"model.backbone={spec['backbone']}",
        *(["train.method=ddcat"] if spec["ddc"] else []),  # a plain source: SAT or clean, the user says (--set)
        *(f"model.{key}={str(o[key]).lower() if isinstance(o[key], bool) else o[key]}" for key in MODEL_OPTIONS),
    ]
    cfg = load_config(file, [*base, *sets])
    if (any(cfg["model"][key] != o[key] for key in MODEL_OPTIONS) or (cfg["model"]["arch"], cfg["model"]["backbone"]) != (spec["arch"], spec["backbone"])
            or cfg["model"]["factory"] is not None or cfg["data"]["num_classes"] != k):
        raise DdcatError("--set may not change the converted model (model.* keys, data.num_classes): they are read from the checkpoint")
    ckpt = {
        "format": FORMAT, "version": VERSION, "model_spec": spec, "model": weights, "config": cfg,
        "converted_from": {"path": str(src), "layout": "paper-code", "base_config": str(file), **info},
    }
    OwnModelSpec(spec).check_state(weights, dst)  # the spec ddcat will rebuild it from, checked before writing
    atomic_save(ckpt, dst)
    return ckpt
