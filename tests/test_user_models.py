"""The user's own models through the real CLI: transformers SegFormer / UperNet (tiny, random
weights, built offline from configs), torchvision-style and plain stand-ins, and the mistakes a
user can make, each a one-line error with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from ddcat.checkpoint import load_checkpoint, load_model
from ddcat.cli import main as cli_main
from ddcat.errors import DdcatError
from ddcat.models.user import Trust

transformers = pytest.importorskip("transformers")

K = 4
TESTS = Path(__file__).parent
SEGFORMER = {
    "num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1], "hidden_sizes": [8, 16], "patch_sizes": [7, 3],
    "strides": [4, 2], "num_attention_heads": [1, 1], "mlp_ratios": [2, 2], "decoder_hidden_size": 16, "num_labels": K,
}
UPERNET = {
    "backbone_config": {"model_type": "convnext", "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1],
                        "out_features": ["stage1", "stage2", "stage3", "stage4"]},
    "hidden_size": 16, "auxiliary_in_channels": 32, "auxiliary_channels": 8, "num_labels": K, "use_auxiliary_head": True,
}
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))


def hf_model(architecture: str, config: dict, **extra) -> dict:
    return {"model": {"factory": "ddcat.models.hf:from_config", "kwargs": {"architecture": architecture, "config": config},
                      "normalize": "imagenet", "ddc_head": "decode_head.classifier", **extra}}


def write_config(folder: Path, model: dict, num_classes: int = K, **sections) -> Path:
    cfg = {
        **model,
        "data": {"num_classes": num_classes, "num_train": 8, "num_val": 4, "image_size": 32},
        "train": {"iters": 3, "batch_size": 4, "crop_size": 32},
        "attack": {"steps": 2},
        "eval": {"batch_size": 4},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def ok(args: list[str]) -> None:
    assert cli_main(args if args[0] == "export" else [*args, "--no-progress"]) == 0


def log_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def val_images(n: int = 4) -> torch.Tensor:
    from ddcat.config import load_config
    from ddcat.data import build_dataset

    ds = build_dataset(load_config(None, [f"data.num_classes={K}", "data.num_val=4", "data.image_size=32"]), "val")
    return torch.stack([ds[i][0] for i in range(n)])


@pytest.fixture(scope="module")
def segformer(tmp_path_factory):
    """SegFormer trained 3 iterations of SAT and 3 of DDC-AT (decode_head.classifier duplicated)."""
    root = tmp_path_factory.mktemp("segformer")
    cfg = write_config(root, hf_model("SegformerForSemanticSegmentation", SEGFORMER))
    for method in ("sat", "ddcat"):
        ok(["train", "--config", str(cfg), "--method", method, "--out", str(root / method)])
    return root, cfg


def test_segformer_sat_and_ddcat_train(segformer):
    root, _ = segformer
    sat, ddc = log_of(root / "sat"), log_of(root / "ddcat")
    assert [r["iter"] for r in sat] == [1, 2, 3] == [r["iter"] for r in ddc]
    assert "loss_deep_sup" not in sat[0]  # SegFormer gives no auxiliary output: no deep supervision
    assert {"loss_aux", "loss_mask", "routed_aux_clean"} <= set(ddc[0])
    ckpt = load_checkpoint(root / "ddcat" / "last.pt")
    spec = ckpt["model_spec"]
    assert spec["factory"] == "ddcat.models.hf:from_config" and spec["kwargs"]["config"] == SEGFORMER
    assert spec["ddc"] and spec["ddc_head"] == "decode_head.classifier"
    assert {k for k in ckpt["model"] if not k.startswith("model.")} == {
        f"ddc_heads.{h}.{p}" for h in ("auxiliary", "mask") for p in ("weight", "bias")
    }


def test_segformer_clean_bim_pgd_eval_from_the_checkpoint_alone(segformer, tmp_path):
    root, _ = segformer
    ok(["eval", "--checkpoint", str(root / "ddcat" / "last.pt"), "--trust-factory", "--attack", "bim", "--attack", "pgd", "--steps", "1,2",
        "--out", str(tmp_path / "ev")])
    records = json.loads((tmp_path / "ev" / "metrics.json").read_text())["records"]
    assert [(r["attack"], r["steps"]) for r in records] == [("clean", 0), ("bim", 1), ("bim", 2), ("pgd", 1), ("pgd", 2)]
    assert all(0.0 <= r["mIoU"] <= 1.0 and r["num_images"] == 4 for r in records)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_segformer_export_loads_into_segformer_for_semantic_segmentation(segformer, tmp_path, suffix, capsys):
    root, cfg = segformer
    ckpt = root / "ddcat" / "last.pt"
    out = tmp_path / f"segformer{suffix}"
    capsys.readouterr()
    ok(["export", str(ckpt), str(out), "--trust-factory"])
    assert capsys.readouterr().out == f"wrote {out} (state dict of ddcat.models.hf:from_config's model, without DDC-AT's heads)\n"
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(out))
    else:
        state = torch.load(out, weights_only=True)
    net = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**SEGFORMER))
    net.load_state_dict(state, strict=True)
    net.eval()
    model, _ = load_model(ckpt, trust=Trust(frozenset({"ddcat.models.hf:from_config"})))
    x = val_images()
    with torch.no_grad():
        theirs = F.interpolate(net(pixel_values=(x - IMAGENET[0]) / IMAGENET[1]).logits, size=(32, 32), mode="bilinear", align_corners=False)
        assert torch.allclose(model.eval()(x), theirs, atol=1e-5)
    # the exported file is also a model.weights file: `ddcat eval --config` gives the same clean mIoU
    capsys.readouterr()
    ok(["eval", "--config", str(cfg), "--set", f"model.weights={out}", "--out", str(tmp_path / "from_weights")])
    ok(["eval", "--checkpoint", str(ckpt), "--trust-factory", "--out", str(tmp_path / "from_ckpt")])
    a = json.loads((tmp_path / "from_weights" / "metrics.json").read_text())
    b = json.loads((tmp_path / "from_ckpt" / "metrics.json").read_text())
    assert a["mIoU"] == b["mIoU"] and a["per_class_iou"] == b["per_class_iou"]


def test_upernet_convnext_sat_ddcat_and_attacks(tmp_path):
    cfg = write_config(tmp_path, hf_model("UperNetForSemanticSegmentation", UPERNET))
    for method in ("sat", "ddcat"):
        ok(["train", "--config", str(cfg), "--method", method, "--out", str(tmp_path / method)])
        assert len(log_of(tmp_path / method)) == 3
    ok(["eval", "--checkpoint", str(tmp_path / "ddcat" / "last.pt"), "--trust-factory", "--attack", "bim", "--attack", "pgd", "--steps", "2",
        "--out", str(tmp_path / "ev")])
    records = json.loads((tmp_path / "ev" / "metrics.json").read_text())["records"]
    assert [r["attack"] for r in records] == ["clean", "bim", "pgd"]
    ok(["export", str(tmp_path / "ddcat" / "last.pt"), str(tmp_path / "upernet.pt"), "--trust-factory"])
    net = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(**UPERNET))
    net.load_state_dict(torch.load(tmp_path / "upernet.pt", weights_only=True), strict=True)
    model, _ = load_model(tmp_path / "ddcat" / "last.pt", trust=Trust(everything=True))
    x = val_images()
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), net.eval()(pixel_values=(x - IMAGENET[0]) / IMAGENET[1]).logits, atol=1e-5)


def standin(function: str, ddc_head: str | None = None, **kwargs) -> dict:
    model = {"factory": f"standin_models:{function}", "kwargs": kwargs}
    if ddc_head:
        model["ddc_head"] = ddc_head
    return {"model": model}


def test_torchvision_style_stand_in_trains_ddcat_with_its_aux_as_deep_supervision(tmp_path):
    cfg = write_config(tmp_path, standin("torchvision_style", "classifier", aux=True))
    ok(["train", "--config", str(cfg), "--method", "ddcat", "--out", str(tmp_path / "run")])
    assert all("loss_deep_sup" in r for r in log_of(tmp_path / "run"))
    ok(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--trust-factory", "--attack", "bim", "--steps", "1", "--out", str(tmp_path / "ev")])


def test_eighth_resolution_stand_in_trains_sat(tmp_path):
    cfg = write_config(tmp_path, standin("eighth"), train={"adv_fraction": 1.0})
    ok(["train", "--config", str(cfg), "--method", "sat", "--out", str(tmp_path / "run")])
    assert all("loss_deep_sup" not in r for r in log_of(tmp_path / "run"))


def test_experiment_file_with_a_user_model(tmp_path):
    base = write_config(tmp_path, standin("eighth"), train={"iters": 2})
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "user", "base": base.name, "models": {"eighth": {}, "tv": standin("torchvision_style", "classifier")},
        "methods": ["ddcat"], "seeds": [0], "evaluation": {"steps": [1], "max_images": 4},
    }))
    assert cli_main(["experiment", str(exp), "--out", str(tmp_path / "out"), "--no-progress"]) == 2  # eighth has no ddc_head
    exp.write_text(yaml.safe_dump({
        "name": "user", "base": base.name, "models": {"eighth": {"model": {"ddc_head": "head"}}, "tv": standin("torchvision_style", "classifier")},
        "methods": ["ddcat"], "seeds": [0], "evaluation": {"steps": [1], "max_images": 4},
    }))
    assert cli_main(["experiment", str(exp), "--out", str(tmp_path / "out2"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert sorted(e["arch"] for e in results["evaluations"]) == ["eighth", "tv"]
    # a fresh process reuses the trained runs: it loads their checkpoints trusting the factories the
    # experiment's configs name (no --trust-factory, no training in that process to vouch for them)
    (tmp_path / "out2" / "results.json").unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "ddcat", "experiment", str(exp), "--out", str(tmp_path / "out2"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [r["reused"] for r in json.loads((tmp_path / "out2" / "results.json").read_text())["runs"]] == [True, True]


def test_resumed_user_model_run_ends_with_the_same_weights(tmp_path):
    cfg = write_config(tmp_path, standin("torchvision_style", "classifier", aux=True), train={"iters": 2, "save_every": 1})
    ok(["train", "--config", str(cfg), "--method", "ddcat", "--out", str(tmp_path / "straight")])
    ok(["train", "--config", str(cfg), "--method", "ddcat", "--set", "train.iters=1", "--out", str(tmp_path / "split")])
    # the 1-iteration run stands for a run stopped after iteration 1 (poly lr at iteration 0 is the base lr either way)
    ok(["train", "--config", str(cfg), "--method", "ddcat", "--out", str(tmp_path / "split"), "--resume"])
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- user mistakes


def fails(args: list[str], capsys, needle: str, out: Path | None = None) -> str:
    capsys.readouterr()
    assert cli_main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddcat: error: ") and "\n" not in err, err
    assert needle in err, err
    if out is not None:
        assert not out.exists()  # no half-written output
    return err


@pytest.mark.parametrize(
    "model, method, needle",
    [
        ({"model": {"factory": "nowhere_pkg.models:build"}}, "clean", "model.factory 'nowhere_pkg.models:build': cannot import module 'nowhere_pkg.models'"),
        ({"model": {"factory": "standin_models"}}, "clean", "model.factory must look like 'package.module:function'"),
        ({"model": {"factory": "standin_models:nothing"}}, "clean", "module 'standin_models' has no attribute 'nothing'"),
        ({"model": {"factory": "standin_models:not_a_module"}}, "clean", "returned a str, not an nn.Module"),
        ({"model": {"factory": "standin_models:eighth", "kwargs": {"depth": 3}}}, "clean", "failed with model.kwargs {'depth': 3}: TypeError"),
        (standin("eighth"), "ddcat", "needs model.ddc_head"),
        (standin("torchvision_style", "decode_head.classifier"), "ddcat", "model.ddc_head 'decode_head.classifier': the model has no attribute 'decode_head'"),
        (standin("eighth", "head.weight"), "ddcat", "model.ddc_head 'head.weight' is a Parameter, not an nn.Module"),
        (standin("tuple_output"), "clean", "cannot read the model's output: it returned a tuple of 1 item(s)"),
        (standin("eighth", num_classes=5), "clean", "have 5 classes (shape (4, 5, 4, 4)), the dataset has 4"),
    ],
)
def test_train_mistakes(tmp_path, capsys, model, method, needle):
    cfg = write_config(tmp_path, model)
    fails(["train", "--config", str(cfg), "--method", method, "--out", str(tmp_path / "run")], capsys, needle, tmp_path / "run")


def test_eval_config_mistakes(tmp_path, capsys):
    cfg = write_config(tmp_path, standin("tuple_output"))
    fails(["eval", "--config", str(cfg), "--out", str(tmp_path / "ev")], capsys, "cannot read the model's output", tmp_path / "ev")
    cfg = write_config(tmp_path, hf_model("SegformerForSemanticSegmentation", SEGFORMER), num_classes=5)
    fails(["eval", "--config", str(cfg), "--out", str(tmp_path / "ev")], capsys, "have 4 classes", tmp_path / "ev")
    torch.save({"not": torch.zeros(1)}, tmp_path / "w.pt")
    cfg = write_config(tmp_path, standin("eighth"))
    fails(["eval", "--config", str(cfg), "--set", f"model.weights={tmp_path / 'w.pt'}", "--out", str(tmp_path / "ev")], capsys,
          "does not fit model.factory 'standin_models:eighth'", tmp_path / "ev")


def test_checkpoint_whose_factory_cannot_be_imported(tmp_path, capsys):
    cfg = write_config(tmp_path, standin("eighth"), train={"iters": 1})
    ok(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ckpt["model_spec"]["factory"] = "moved_away.models:eighth"
    torch.save(ckpt, tmp_path / "moved.pt")
    fails(["eval", "--checkpoint", str(tmp_path / "moved.pt"), "--out", str(tmp_path / "ev")], capsys,
          "names model.factory 'moved_away.models:eighth', code that ddcat would run", tmp_path / "ev")
    fails(["eval", "--checkpoint", str(tmp_path / "moved.pt"), "--trust-factory", "--out", str(tmp_path / "ev")], capsys,
          "model.factory 'moved_away.models:eighth': cannot import module 'moved_away.models'", tmp_path / "ev")


def test_a_checkpoint_cannot_make_ddcat_run_its_factory(tmp_path, capsys):
    """A crafted user-model checkpoint naming subprocess.run is refused before anything is imported."""
    cfg = write_config(tmp_path, standin("eighth"), train={"iters": 1})
    ok(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["model_spec"].update(factory="subprocess:run", kwargs={"args": ["touch", str(marker)]})
    torch.save(ckpt, tmp_path / "evil.pt")
    for command in (["eval", "--checkpoint", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "ev")],
                    ["export", str(tmp_path / "evil.pt"), str(tmp_path / "x.pt")]):
        capsys.readouterr()
        assert cli_main(command) == 2
        assert "--trust-factory" in capsys.readouterr().err
    assert not marker.exists()
    # the library functions take the same value: trusting the config's own factory does not vouch for subprocess:run
    from ddcat.checkpoint import export_main_branch

    mine = Trust().with_configs({"model": {"factory": "standin_models:eighth"}})
    for load in (lambda t: load_model(tmp_path / "evil.pt", trust=t), lambda t: export_main_branch(tmp_path / "evil.pt", tmp_path / "x.pt", trust=t)):
        for trust in (Trust(), mine):
            with pytest.raises(DdcatError, match="names model.factory 'subprocess:run'"):
                load(trust)
    assert not marker.exists() and not (tmp_path / "x.pt").exists()


def test_trust_is_given_per_command_not_remembered(tmp_path, capsys):
    """Training a user-model config does not make later commands of the same process run the
    factory a checkpoint names: each command says whom it trusts (--trust-factory, or --config)."""
    cfg = write_config(tmp_path, standin("eighth"), train={"iters": 1})
    ok(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    ckpt = tmp_path / "run" / "last.pt"
    fails(["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev")], capsys, "pass --trust-factory", tmp_path / "ev")
    with pytest.raises(DdcatError, match="names model.factory 'standin_models:eighth'"):
        load_model(ckpt)
    assert Trust().with_configs({"model": {"factory": None}}) == Trust()
    named = Trust(everything=False).with_configs({"model": {"factory": "standin_models:eighth"}})
    assert named.allows("standin_models:eighth") and not named.allows("subprocess:run") and Trust(everything=True).allows("subprocess:run")
    model, _ = load_model(ckpt, trust=named)
    assert sum(p.numel() for p in model.parameters()) > 0
    # --config names the factory: the user's own code runs, and a transfer source naming it too
    ok(["eval", "--config", str(cfg), "--transfer-from", str(ckpt), "--attack", "bim", "--steps", "1", "--out", str(tmp_path / "ev2")])
    ok(["eval", "--checkpoint", str(ckpt), "--trust-factory", "--out", str(tmp_path / "ev3")])


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["model.factory=a:b", "model.kwargs=3"], "'model.kwargs' (--set) must be dict or null"),
        (["model.factory=a:b", "model.kwargs={1: 2}"], "must have string keys"),
        (["model.factory=a:b", "model.normalize=[1, 2]"], "'model.normalize' (--set) must be dict or str or null"),
        (["model.factory=a:b", "model.normalize={mean: [0, 0, 0], std: [1, 0, 1]}"], "std: [3 positive numbers]"),
        (["model.ddc_head=classifier"], "'model.ddc_head' applies to model.factory models only"),
    ],
)
def test_user_model_config_values(sets, needle, tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    fails(args, capsys, needle, tmp_path / "run")


# ----------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_two_gloo_processes_train_a_user_model_like_one_process(tmp_path):
    """UperNet (its auxiliary head unused without labels: DDP must allow unused parameters),
    2 ranks x 4 images == 1 process x 2 micro-batches of 4, as for ddcat's own models."""
    cfg = write_config(tmp_path, hf_model("UperNetForSemanticSegmentation", UPERNET), data={"num_train": 16}, train={"batch_size": 8})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")])}

    def run(out, *extra, nproc=1):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
        cmd = [*launcher, "-m", "ddcat", "train", "--config", str(cfg), "--method", "ddcat", "--no-progress", "--out", str(tmp_path / out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return load_checkpoint(tmp_path / out / "last.pt")["model"]

    ddp = run("ddp", nproc=2)
    single = run("single", "--set", "train.accum_steps=2")
    diff = max(float((ddp[k].double() - single[k].double()).abs().max()) for k in ddp if ddp[k].is_floating_point())
    assert diff < 1e-5


def test_resume_from_a_user_checkpoint_that_does_not_fit_is_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path, standin("eighth"), train={"iters": 1})
    ok(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    key = next(iter(ckpt["model"]))
    ckpt["model"][key] = torch.zeros(1, 1, 1, 1, 1)
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    err = fails(["train", "--config", str(cfg), "--set", "train.iters=2", "--out", str(tmp_path / "run"), "--resume"], capsys,
                "does not match its model spec")
    assert str(tmp_path / "run" / "last.pt") in err
