"""Sliding-window inference, the mixed-precision / channels-last options (CPU-runnable parts of
the GPU path), and resuming a run with a method whose model differs."""

import pytest
import torch

from conftest import train_args
from ddcat.checkpoint import load_checkpoint
from ddcat.cli import main
from ddcat.evaluation.inference import SlidingWindow, window_starts


def test_window_starts_cover_the_image_and_end_flush():
    assert window_starts(10, 10, 5) == [0]
    assert window_starts(8, 10, 5) == [0]
    assert window_starts(25, 10, 7) == [0, 7, 14, 15]
    for length, crop, stride in [(97, 32, 21), (64, 32, 32), (33, 32, 1)]:
        starts = window_starts(length, crop, stride)
        covered = torch.zeros(length, dtype=torch.bool)
        for s in starts:
            covered[s : s + crop] = True
        assert covered.all() and starts[-1] == length - crop


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 5, 1).eval()  # no spatial context: every crop predicts exactly its pixels
    x = torch.rand(2, 3, 45, 70)
    slid = SlidingWindow(model, crop=32, stride_rate=2 / 3)(x)
    assert slid.shape == (2, 5, 45, 70)
    assert torch.allclose(slid, model(x), atol=1e-6)
    small = torch.rand(1, 3, 20, 24)  # smaller than a window: padded, then cut back
    assert torch.allclose(SlidingWindow(model, crop=32)(small), model(small), atol=1e-6)


def test_attack_gradient_flows_through_the_sliding_window():
    from ddcat.attacks import BIM

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, padding=1)).eval()
    x = torch.rand(1, 3, 40, 40)
    y = torch.randint(0, 3, (1, 40, 40))
    adv = BIM(0.03, 0.01, 2)(SlidingWindow(model, crop=24), x, y)
    changed = (adv - x).abs() > 0
    assert changed[..., :20, :20].any() and changed[..., 20:, 20:].any()  # every window region moved


@pytest.mark.parametrize("sets", [["train.amp=bf16"], ["train.channels_last=true"]])
def test_training_options_of_the_gpu_path_run_on_cpu(tmp_path, sets):
    out = tmp_path / "run"
    extra = [x for s in sets for x in ("--set", s)]
    assert main(train_args(out, "sat", extra=extra)) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_resuming_a_plain_run_with_a_ddc_method_is_a_clear_error(tmp_path, capsys, clean_run):
    """A checkpoint without the auxiliary / mask heads cannot carry DDC-AT."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    rc = main(train_args(out, "ddcat", extra=["--resume"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "another model" in err[0] and "'ddc': False" in err[0]
