"""Checkpoints: atomic writes, safe loading, and exporting DDC-AT's main branch as a plain model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddcat.checkpoint import atomic_save, export_main_branch, load_checkpoint, load_model
from ddcat.cli import main
from ddcat.errors import DdcatError
from ddcat.models import build_model

from conftest import NUM_CLASSES


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- atomic_save


def test_atomic_save_leaves_only_the_target(tmp_path):
    target = tmp_path / "sub" / "ck.pt"
    atomic_save({"a": torch.arange(5)}, target)
    atomic_save({"a": torch.arange(6)}, target)  # replace an existing file
    assert sorted(p.name for p in target.parent.iterdir()) == ["ck.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(6))


def test_atomic_save_failure_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "ck.pt"
    atomic_save({"a": torch.ones(3)}, target)
    before = target.read_bytes()
    with pytest.raises(Exception):
        atomic_save({"a": torch.zeros(3), "fn": lambda: None}, target)  # a lambda cannot be pickled
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


# ----------------------------------------------------------------------------- load_checkpoint


class Payload:
    """Unpickling this would create a marker file: weights_only loading must refuse it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_load_checkpoint_refuses_arbitrary_pickles(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "ddcat", "model": {}, "model_spec": {}, "x": Payload(str(marker))}, path)
    with pytest.raises(DdcatError, match=r"evil\.pt contains Python objects that are not allowed .*it was not loaded"):
        load_checkpoint(path)
    assert not marker.exists()


def test_load_checkpoint_missing_truncated_and_foreign(tmp_path, clean_run):
    with pytest.raises(DdcatError, match=r"checkpoint not found: .*absent\.pt"):
        load_checkpoint(tmp_path / "absent.pt")
    data = (clean_run / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DdcatError) as info:
        load_checkpoint(truncated)
    assert str(truncated) in str(info.value) and "\n" not in str(info.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(DdcatError, match=r"foreign\.pt is not a ddcat checkpoint"):
        load_checkpoint(foreign)
    a_dir = tmp_path / "a_dir.pt"
    a_dir.mkdir()
    with pytest.raises(DdcatError, match="is a directory, not a file"):
        load_checkpoint(a_dir)


def test_training_checkpoint_contents(clean_run, ddcat_run):
    for run, ddc in ((clean_run, False), (ddcat_run, True)):
        ck = load_checkpoint(run / "last.pt")
        assert ck["format"] == "ddcat" and ck["iteration"] == 2
        assert ck["model_spec"]["ddc"] is ddc and ck["model_spec"]["num_classes"] == NUM_CLASSES
        assert any(k.startswith("heads.auxiliary.") for k in ck["model"]) is ddc
        assert {"optimizer", "rng", "config"} <= set(ck)
    # no temporary files left next to the checkpoint
    assert not [p.name for p in clean_run.iterdir() if p.name.startswith(".") or p.name.endswith((".tmp", ".new"))]


def test_load_model_checks_expectations_and_weights(tmp_path, clean_run):
    with pytest.raises(DdcatError, match=rf"has num_classes={NUM_CLASSES}, expected 9"):
        load_model(clean_run / "last.pt", expect={"num_classes": 9})
    ck = load_checkpoint(clean_run / "last.pt")
    del ck["model"]["heads.main.4.bias"]
    broken = tmp_path / "broken.pt"
    atomic_save(ck, broken)
    with pytest.raises(DdcatError, match=r"broken\.pt does not match its model spec"):
        load_model(broken)


# ----------------------------------------------------------------------------- export


def check_export(src: Path, dst: Path) -> None:
    ddc_model, src_ck = load_model(src)
    assert ddc_model.ddc
    exported = load_checkpoint(dst)
    spec = exported["model_spec"]
    assert spec["ddc"] is False and spec["num_classes"] == NUM_CLASSES
    assert not any(k.startswith(("heads.auxiliary.", "heads.mask.")) for k in exported["model"])
    plain = build_model(spec["arch"], spec["backbone"], spec["num_classes"], ddc=False, **spec["options"])
    plain.load_state_dict(exported["model"], strict=True)  # raises on any missing / extra key
    reference = build_model(spec["arch"], spec["backbone"], spec["num_classes"], ddc=False, **spec["options"])
    assert n_params(plain) == n_params(reference) < n_params(ddc_model)
    ddc_model.eval()
    plain.eval()
    x = images(3)
    with torch.no_grad():
        assert torch.equal(plain(x), ddc_model(x))
    # every kept tensor is the source's tensor, unchanged
    for key, value in exported["model"].items():
        assert torch.equal(value, src_ck["model"][key]), key
    # and load_model gives the plain model directly
    loaded, _ = load_model(dst)
    assert not loaded.ddc and set(loaded.heads) == {"main", "deep_sup"}


def test_export_main_branch(tmp_path, ddcat_run):
    dst = tmp_path / "main.pt"
    export_main_branch(ddcat_run / "last.pt", dst)
    check_export(ddcat_run / "last.pt", dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main.pt"]


def test_export_cli(tmp_path, ddcat_run, capsys):
    dst = tmp_path / "out" / "main.pt"
    assert main(["export", str(ddcat_run / "last.pt"), str(dst)]) == 0
    assert capsys.readouterr().out == f"wrote {dst} (main branch only, loads into the plain model)\n"
    check_export(ddcat_run / "last.pt", dst)


def test_export_of_a_plain_checkpoint_is_identity(tmp_path, clean_run):
    dst = tmp_path / "plain.pt"
    export_main_branch(clean_run / "last.pt", dst)
    src = load_checkpoint(clean_run / "last.pt")["model"]
    out = load_checkpoint(dst)["model"]
    assert set(out) == set(src) and all(torch.equal(out[k], src[k]) for k in src)


def test_export_cli_errors(tmp_path, capsys):
    dst = tmp_path / "x" / "main.pt"
    assert main(["export", str(tmp_path / "missing.pt"), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddcat: error: checkpoint not found") and "missing.pt" in err
    assert not dst.exists() and not dst.parent.exists()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 broken zip" * 4)
    assert main(["export", str(bad), str(dst)]) == 2
    assert "bad.pt" in capsys.readouterr().err and not dst.exists()


# ----------------------------------------------------------------------------- the spec kinds


def test_each_spec_kind_checks_builds_and_describes_itself(ddcat_run):
    from ddcat.checkpoint import OwnModelSpec, UserModelSpec, config_spec, spec_of
    from ddcat.checkpoint.spec import read_spec
    from ddcat.config import load_config

    fields = load_checkpoint(ddcat_run / "last.pt")["model_spec"]
    own = spec_of(fields)
    assert type(own) is OwnModelSpec and not own.unused_parameters
    assert own.describe() == f"{fields['arch']} {fields['backbone']}, {NUM_CLASSES} classes with DDC-AT's f_a and f_m"
    assert OwnModelSpec(dict(fields, ddc=False)).describe() == f"{fields['arch']} {fields['backbone']}, {NUM_CLASSES} classes"
    assert own.export_note() == "main branch only, loads into the plain model"
    assert set(own.skeleton()) == set(own.build().state_dict())  # meta shapes: the model's own keys
    assert all(t.is_meta for t in own.skeleton().values())

    cfg = load_config(None, ["model.factory=pkg.mod:build", "model.kwargs={depth: 2}", "data.num_classes=5"])
    user = config_spec(cfg, ddc=False)
    assert type(user) is UserModelSpec and user.unused_parameters
    assert user.fields == {"factory": "pkg.mod:build", "kwargs": {"depth": 2}, "num_classes": 5, "ddc": False, "ddc_head": None, "normalize": None}
    assert user.describe() == "model.factory 'pkg.mod:build', 5 classes"
    assert user.export_note() == "state dict of pkg.mod:build's model, without DDC-AT's heads"
    assert type(read_spec(user.fields, "u.pt")) is UserModelSpec and type(read_spec(fields, "o.pt")) is OwnModelSpec

    for raw, message in (
        ([1], r"u\.pt: 'model_spec' must be a mapping, got list"),
        ({"factory": 3}, r"u\.pt: 'model_spec\.factory' must be a string"),
        (dict(user.fields, num_classes=300), r"'model_spec\.num_classes' must be an integer in \[2, 255\]"),
        ({"arch": "pspnet"}, r"u\.pt: 'model_spec' lacks backbone, num_classes, ddc, options"),
        (dict(fields, options={"huge": 1}), r"unknown model option\(s\) 'huge'"),
    ):
        with pytest.raises(DdcatError, match=message):
            read_spec(raw, "u.pt")
