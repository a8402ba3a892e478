"""Checkpoints: written atomically, read with ``weights_only=True``, checked before anything is built.

A checkpoint is a dict::

    {"format": "ddcat", "version": 1,
     "model_spec": {...},   # ddcat's own model or the user's: ddcat.checkpoint.spec
     "model": state_dict, "config": {...}, ... training state for ``last.pt`` ...}

* :mod:`ddcat.checkpoint.io`: the file (atomic save with Ctrl-C held back, ``last.pt`` rotation,
  reading) and the training state ``--resume`` continues from (optimizer, iteration, generators);
* :mod:`ddcat.checkpoint.spec`: one class per kind of model (:class:`OwnModelSpec`,
  :class:`UserModelSpec`), each knowing how to build, check, export and describe itself;
* :mod:`ddcat.checkpoint.load`: the two together (load a model, export, resume, write from a config).
"""

from ddcat.checkpoint.io import (
    FORMAT,
    PREV_NAME,
    VERSION,
    atomic_save,
    check_resumable,
    remove_stale_temporaries,
    save_last,
    sigint_deferred,
    write_error,
)
from ddcat.checkpoint.load import (
    checkpoint_from_config,
    export_main_branch,
    export_note,
    load_checkpoint,
    load_model,
    load_state,
    resume_checkpoint,
)
from ddcat.checkpoint.spec import (
    ModelSpec,
    OwnModelSpec,
    UserModelSpec,
    build_from_spec,
    check_spec,
    check_state_shapes,
    config_spec,
    initial_weights,
    main_branch_state,
    spec_from_config,
    spec_of,
)

__all__ = [
    "FORMAT", "PREV_NAME", "VERSION", "ModelSpec", "OwnModelSpec", "UserModelSpec", "atomic_save", "build_from_spec",
    "check_resumable", "check_spec", "check_state_shapes", "checkpoint_from_config", "config_spec", "export_main_branch",
    "export_note", "initial_weights", "load_checkpoint", "load_model", "load_state", "main_branch_state",
    "remove_stale_temporaries", "resume_checkpoint", "save_last", "sigint_deferred", "spec_from_config", "spec_of", "write_error",
]
