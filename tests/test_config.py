"""Run configuration: defaults, YAML files, --set overrides, type and choice checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ddcat.config import CHOICES, DEFAULTS, flat_keys, load_config, parse_override
from ddcat.errors import DdcatError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_load_and_are_a_copy():
    cfg = load_config()
    assert cfg == DEFAULTS
    cfg["model"]["arch"] = "deeplabv3"
    cfg["train"]["lr"] = 5.0
    assert DEFAULTS["model"]["arch"] == "pspnet" and DEFAULTS["train"]["lr"] == 0.01
    assert load_config()["model"]["arch"] == "pspnet"


def test_yaml_then_set_overrides_with_type_conversion(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model:\n  arch: deeplabv3\n  width: 16\n"
        "train:\n  lr: 1\n  iters: 10\n  method: sat\n"
        "data:\n  root: /data/voc\n"
    )
    snapshot = copy.deepcopy(DEFAULTS)
    cfg = load_config(path, [
        "train.iters=25", "model.deep_stem=true", "train.momentum=0.5", "model.pretrained=/w/r50.pth",
        "data.root=null", "attack.name=pgd", "seed=3", "train.amp=bf16",
    ])  # fmt: skip
    assert cfg["model"]["arch"] == "deeplabv3" and cfg["model"]["width"] == 16  # from the file
    assert cfg["train"]["method"] == "sat"
    assert cfg["train"]["lr"] == 1.0 and type(cfg["train"]["lr"]) is float  # int accepted, stored as float
    assert cfg["train"]["iters"] == 25 and type(cfg["train"]["iters"]) is int  # --set beats the file
    assert cfg["model"]["deep_stem"] is True
    assert cfg["train"]["momentum"] == 0.5
    assert cfg["model"]["pretrained"] == "/w/r50.pth"
    assert cfg["data"]["root"] is None  # null accepted for a None default, overriding the file
    assert cfg["attack"]["name"] == "pgd" and cfg["seed"] == 3 and cfg["train"]["amp"] == "bf16"
    # untouched keys keep their defaults, and DEFAULTS itself is not modified
    assert cfg["eval"] == DEFAULTS["eval"] and cfg["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert DEFAULTS == snapshot


def test_parse_override_reads_yaml_values():
    assert parse_override("train.lr=0.02") == ("train.lr", 0.02)
    assert parse_override("model.deep_stem=false") == ("model.deep_stem", False)
    assert parse_override("data.root=/a=b") == ("data.root", "/a=b")  # split on the first '='
    assert parse_override(" model.arch =pspnet") == ("model.arch", "pspnet")
    with pytest.raises(DdcatError, match="key=value"):
        parse_override("train.lr")


def test_exponent_notation_without_dot_is_a_number():
    cfg = load_config(None, ["train.lr=1e-4"])
    assert cfg["train"]["lr"] == pytest.approx(1e-4)


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(DdcatError) as info:
        load_config(None, ["train.lrate=0.1"])
    msg = str(info.value)
    assert "'train.lrate'" in msg and "valid keys" in msg
    for key in ("train.lr", "model.arch", "attack.eps", "data.num_classes", "seed"):
        assert key in msg
    assert "\n" not in msg
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  archh: pspnet\n")
    with pytest.raises(DdcatError, match=r"unknown config key 'model\.archh' in .*bad\.yaml; valid keys"):
        load_config(path)
    with pytest.raises(DdcatError, match=r"unknown config key 'optim\.lr'"):
        load_config(None, ["optim.lr=0.1"])
    with pytest.raises(DdcatError, match=r"unknown config key 'seed\.x'"):
        load_config(None, ["seed.x=1"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.iters=abc", "'train.iters' (--set) must be an integer, got 'abc'"),
        ("train.iters=1.5", "'train.iters' (--set) must be an integer, got 1.5"),
        ("train.iters=true", "'train.iters' (--set) must be an integer, got True"),
        ("train.lr=fast", "'train.lr' (--set) must be a number, got 'fast'"),
        ("train.lr=true", "'train.lr' (--set) must be a number, got True"),
        ("model.deep_stem=1", "'model.deep_stem' (--set) must be true or false, got 1"),
        ("model.arch=3", "'model.arch' (--set) must be a string, got 3"),
        ("model.pretrained=3", "'model.pretrained' (--set) must be str or null, got 3"),
        ("model=3", "'model' (--set) is a section"),
    ],
)
def test_wrong_type_names_key_and_value(override, fragment):
    with pytest.raises(DdcatError) as info:
        load_config(None, [override])
    assert fragment in str(info.value)


def test_wrong_type_in_yaml_names_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("train:\n  batch_size: eight\n")
    with pytest.raises(DdcatError, match=r"'train\.batch_size' in .*t\.yaml must be an integer, got 'eight'"):
        load_config(path)


@pytest.mark.parametrize("key, value", [("model.arch", "unet"), ("train.method", "trades"), ("attack.name", "cw"), ("eval.mode", "tiles")])
def test_invalid_choice_lists_the_choices(key, value):
    with pytest.raises(DdcatError) as info:
        load_config(None, [f"{key}={value}"])
    msg = str(info.value)
    assert f"'{key}'" in msg and repr(value) in msg
    assert ", ".join(CHOICES[key]) in msg


@pytest.mark.parametrize("value", ["1.5", "-0.1", "2"])
def test_adv_fraction_outside_unit_interval(value):
    with pytest.raises(DdcatError, match=r"'train\.adv_fraction' \(--set\) must lie in \[0, 1\]"):
        load_config(None, [f"train.adv_fraction={value}"])


@pytest.mark.parametrize("value", ["0", "0.25", "1"])
def test_adv_fraction_inside_unit_interval(value):
    assert load_config(None, [f"train.adv_fraction={value}"])["train"]["adv_fraction"] == float(value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.iters=0", "train.iters"), ("train.batch_size=-1", "train.batch_size"), ("train.lr=0", "train.lr"),
        ("attack.eps=-0.01", "attack.eps"), ("attack.alpha=0", "attack.alpha"), ("attack.steps=-1", "attack.steps"),
        ("data.num_classes=1", "data.num_classes"), ("model.output_stride=4", "model.output_stride"),
    ],
)  # fmt: skip
def test_cross_key_validation(override, key):
    with pytest.raises(DdcatError, match=f"'{key}'"):
        load_config(None, [override])


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(DdcatError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(DdcatError, match=r"broken\.yaml is not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(DdcatError, match="mapping"):
        load_config(scalar)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == DEFAULTS


def test_flat_keys_cover_every_leaf():
    keys = flat_keys()
    assert len(keys) == len(set(keys))
    assert {"seed", "model.pretrained", "train.mask_ignore", "eval.max_images"} <= set(keys)
    assert "model" not in keys and "train" not in keys


CONFIG_DIRS = (REPO / "configs", REPO / "src" / "ddcat" / "configs")


def _config_files() -> list:
    files: dict[Path, Path] = {}  # resolved -> first path seen (configs/ may be a symlink)
    for d in CONFIG_DIRS:
        for f in sorted(d.glob("**/*.y*ml")):
            files.setdefault(f.resolve(), f)
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason="configs/ holds no YAML files"), id="no-configs")]
    return [pytest.param(f, id=str(f.relative_to(REPO))) for f in files.values()]


def _check_experiment_file(path: Path) -> None:
    """An experiment grid: every run it would train has a valid config, normal and --quick."""
    from ddcat.experiment import load_experiment
    from ddcat.training import METHODS

    for quick in (False, True):
        spec = load_experiment(path, quick=quick)
        assert spec["runs"], f"{path} describes no runs"
        for run in spec["runs"]:
            assert run.cfg["train"]["method"] in METHODS
            assert set(run.cfg) == set(DEFAULTS)


@pytest.mark.parametrize("path", _config_files())
def test_every_shipped_config_loads(path):
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), f"{path} is not a mapping"
    if "base" in data or "models" in data:
        _check_experiment_file(path)
        return
    cfg = load_config(path)
    assert set(cfg) == set(DEFAULTS)


def test_packaged_configs_match_the_repository_copies():
    repo, packaged = CONFIG_DIRS
    if not repo.is_dir() or not packaged.is_dir():
        pytest.skip("one of configs/ and src/ddcat/configs/ is missing")
    if repo.resolve() == packaged.resolve():
        pytest.skip("configs/ is a link to the packaged folder")
    names = sorted(p.name for p in repo.glob("*.yaml"))
    assert names == sorted(p.name for p in packaged.glob("*.yaml"))
    for name in names:
        assert (repo / name).read_text() == (packaged / name).read_text(), name


def test_bare_off_is_the_string_choice_not_a_boolean(tmp_path):
    """YAML 1.1 reads ``off`` as false; for a key whose choices include "off" it means "off"."""
    assert load_config(None, ["train.amp=off"])["train"]["amp"] == "off"
    (tmp_path / "c.yaml").write_text("train:\n  amp: off\n")
    assert load_config(tmp_path / "c.yaml")["train"]["amp"] == "off"
    with pytest.raises(DdcatError, match="'train.optimizer'"):
        load_config(None, ["train.optimizer=off"])
