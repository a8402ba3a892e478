"""Randomized smoothing for segmentation (SegCertify): the statistics against SciPy / statsmodels
and hand-worked cases, the sampling loop on models whose answer is known, ``ddcat certify``."""

from __future__ import annotations

import copy
from pathlib import Path
import json
import math

import pytest
import torch
from torch import nn

from ddcat.certification import CertifyPlan, certify_checkpoint
from ddcat.certification import certify as certify_module
from ddcat.certification.certify import abstain_confusion, certify_dataset as certify, certified_metrics, sample_seed
from ddcat.certification.smoothing import (
    binomial_pvalues,
    bonferroni_reject,
    certified_radius,
    holm_reject,
    min_samples,
)
from ddcat.cli import main as cli_main
from ddcat.distributed import DistContext
from ddcat.errors import DdcatError



# SciPy and statsmodels are the independent references of the statistics tests (test-only
# dependencies): a test that needs one takes it as a fixture and only that test skips without it.
@pytest.fixture
def scipy_stats():
    return pytest.importorskip("scipy.stats")


@pytest.fixture
def multitest():
    return pytest.importorskip("statsmodels.stats.multitest")


# ----------------------------------------------------------------------------- the statistics
@pytest.mark.parametrize("n, tau", [(1, 0.75), (10, 0.6), (100, 0.75), (1000, 0.99), (100_000, 0.9)])
def test_binomial_pvalues_equal_scipy(n, tau, scipy_stats):
    counts = torch.unique(torch.cat([torch.arange(0, min(n, 50) + 1), torch.linspace(0, n, 200).long(), torch.tensor([n - 1, n]).clamp(min=0)]))
    ours = binomial_pvalues(counts, n, tau).numpy()
    ref = scipy_stats.binom.sf(counts.numpy() - 1, n, tau)
    for k, a, b in zip(counts.tolist(), ours, ref):
        if b > 1e-290:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-300), (k, a, b)
        else:  # both underflow towards 0 (far below any alpha / pixels)
            assert a < 1e-280
    assert ours[counts.tolist().index(0)] == 1.0
    assert ours[-1] == pytest.approx(tau**n, rel=1e-9)  # all samples agree: tau^n


def test_binomial_pvalues_refuse_counts_outside_0_n():
    with pytest.raises(ValueError):
        binomial_pvalues(torch.tensor([11]), 10, 0.5)


def test_holm_and_bonferroni_hand_worked():
    p = torch.tensor([0.03, 0.01, 0.2, 0.015], dtype=torch.float64)
    # Bonferroni: alpha / 4 = 0.0125 -> only 0.01
    assert bonferroni_reject(p, 0.05).tolist() == [False, True, False, False]
    # Holm: 0.01 <= 0.05/4, 0.015 <= 0.05/3, 0.03 > 0.05/2 -> stop
    assert holm_reject(p, 0.05).tolist() == [False, True, False, True]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_corrections_equal_statsmodels(seed, method, multitest):
    g = torch.Generator().manual_seed(seed)
    m = [1, 7, 50, 400, 1000, 3000][seed]
    p = torch.rand(m, generator=g, dtype=torch.float64) ** 4  # many small p-values
    p[: m // 5] = p[0]  # ties
    alpha = [0.05, 0.001, 0.01, 0.1, 1e-4, 0.05][seed]
    ref, *_ = multitest.multipletests(p.numpy(), alpha=alpha, method=method)
    ours = (holm_reject if method == "holm" else bonferroni_reject)(p, alpha)
    assert ours.tolist() == ref.tolist()
    assert 0 < int(ours.sum()) < m or m < 10  # the case is not trivial


def test_radius_and_minimum_samples(scipy_stats):
    assert certified_radius(0.25, 0.75) == pytest.approx(0.25 * scipy_stats.norm.ppf(0.75), rel=1e-12)
    assert certified_radius(0.5, 0.99) == pytest.approx(0.5 * scipy_stats.norm.ppf(0.99), rel=1e-12)
    for tau, alpha, pixels in [(0.75, 1e-3, 4096), (0.75, 1e-3, 1024), (0.9, 1e-4, 10**6), (0.6, 0.05, 1)]:
        n = min_samples(tau, alpha, pixels)
        assert tau**n <= alpha / pixels < tau ** (n - 1) or n == 1
    assert min_samples(0.75, 1e-3, 4096) == 53  # ln(1e-3 / 4096) / ln(0.75) = 52.9


def test_certified_metrics_count_abstentions_as_false_negatives_only():
    # class 0: 3 right, 1 predicted 1, 2 abstained; class 1: 4 right
    m = torch.tensor([[3, 1, 2], [0, 4, 0]])
    out = certified_metrics(m)
    assert out["certified_pixel_accuracy"] == pytest.approx(7 / 10)
    assert out["abstain_rate"] == pytest.approx(2 / 10)
    # IoU_0 = 3 / (6 + 3 - 3) = 0.5; IoU_1 = 4 / (4 + 5 - 4) = 0.8
    assert out["certified_mIoU"] == pytest.approx(0.65)
    pred = torch.tensor([[0, -1, 1], [1, 255, 0]])
    labels = torch.tensor([[0, 0, 1], [1, 255, 255]])
    assert abstain_confusion(pred, labels, 2).tolist() == [[1, 0, 1], [0, 2, 0]]


# ----------------------------------------------------------------------------- the sampling loop
class Images(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class Constant(nn.Module):
    """The same class map whatever the input."""

    def __init__(self, classes: torch.Tensor, k: int):
        super().__init__()
        self.logits = nn.functional.one_hot(classes, k).permute(2, 0, 1).float() * 10

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1, -1, -1) + 0 * x[:, :1]


class Threshold(nn.Module):
    """Class 1 where the red channel exceeds 0.5, else 0: on a 0.5-grey image the noise decides."""

    def forward(self, x):
        r = x[:, 0] - 0.5
        return torch.stack([-r, r], dim=1)


class Recorder(nn.Module):
    """Records every input it sees (one row per sample); predicts class 0."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])


def halves(size=8, images=2):
    labels = torch.zeros(images, size, size, dtype=torch.long)
    labels[:, :, size // 2 :] = 1
    labels[:, 0, 0] = 255
    return Images(torch.full((images, 3, size, size), 0.5), labels)


def test_a_constant_model_certifies_every_pixel_at_the_radius(scipy_stats):
    data = halves()
    plan = CertifyPlan(sigma=0.5, n0=3, n=100, alpha=0.01, taus=(0.75, 0.9))
    records = certify(Constant(torch.zeros(8, 8, dtype=torch.long), 2), data, plan, 2, seed=0)
    for r, tau in zip(records, plan.taus):
        assert r["radius"] == pytest.approx(0.5 * scipy_stats.norm.ppf(tau))
        assert r["abstain_rate"] == 0.0
        assert r["certified_pixel_accuracy"] == pytest.approx(31 / 63)  # class 0 on the left half, one pixel ignored
        # IoU_0 = 31 / 63 (the right half is a false positive), IoU_1 = 0
        assert r["certified_mIoU"] == pytest.approx((31 / 63) / 2)
        assert r["smoothed_pixel_accuracy"] == pytest.approx(31 / 63)
        assert [im["num_pixels"] for im in r["images"]] == [63, 63]


def test_a_model_that_flips_with_the_noise_abstains():
    records = certify(Threshold(), halves(), CertifyPlan(sigma=0.25, n0=5, n=100, alpha=0.01), 2, seed=0)
    r = records[0]
    assert r["abstain_rate"] == 1.0 and r["certified_pixel_accuracy"] == 0.0
    assert 0.3 < r["smoothed_pixel_accuracy"] < 0.7  # a coin flip per pixel


def test_no_labelled_pixel_is_an_error():
    data = Images(torch.rand(2, 3, 8, 8), torch.full((2, 8, 8), 255))
    with pytest.raises(DdcatError, match="no labelled pixel"):
        certify(Threshold(), data, CertifyPlan(sigma=0.25, n0=2, n=60, alpha=0.1), 2, seed=0)


def test_noise_is_independent_across_samples_and_gaussian():
    data = Images(torch.zeros(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long))
    model = Recorder()
    sigma = 0.3
    certify(model, data, CertifyPlan(sigma=sigma, n0=10, n=100, alpha=0.01, batch_size=16), 2, seed=0)
    draws = torch.cat(model.seen).reshape(110, -1) / sigma  # the image is 0: the input is the noise
    assert draws.shape == (110, 3 * 32 * 32)
    corr = torch.corrcoef(draws)
    off = corr[~torch.eye(110, dtype=torch.bool)]
    assert float(off.abs().max()) < 0.15  # independent draws: |corr| ~ 1/sqrt(3072) = 0.018
    assert abs(float(draws.std()) - 1.0) < 0.02 and abs(float(draws.mean())) < 0.02


def test_noise_does_not_depend_on_the_batch_size_and_follows_the_seed():
    data = Images(torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))

    def inputs(batch, seed):
        model = Recorder()
        certify(model, data, CertifyPlan(sigma=0.25, n0=4, n=30, alpha=0.1, batch_size=batch), 2, seed=seed)
        return torch.cat(model.seen)

    a, b = inputs(3, 0), inputs(7, 0)
    assert torch.equal(a, b)
    assert not torch.equal(a, inputs(3, 1))
    assert len({sample_seed(0, i, p, j) for i in range(3) for p in range(2) for j in range(100)}) == 600


def test_a_trained_model_gives_the_same_records_at_any_batch_size(clean_run):
    plan = dict(sigma=0.25, n0=4, n=60, alpha=0.01, taus=(0.75, 0.6), max_images=2, seed=3)
    a = certify_checkpoint(clean_run / "last.pt", CertifyPlan(batch_size=5, **plan), progress=False).records
    b = certify_checkpoint(clean_run / "last.pt", CertifyPlan(batch_size=16, **plan), progress=False).records
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [{k: v for k, v in r.items() if k not in drop} for r in b]
    assert a[1]["abstain_rate"] <= a[0]["abstain_rate"]  # a lower tau certifies at least as much


def test_ranks_certify_disjoint_images_with_the_same_noise(monkeypatch):
    data = Images(torch.rand(5, 3, 8, 8), torch.randint(0, 2, (5, 8, 8)))
    model = Threshold()
    plan = CertifyPlan(sigma=0.1, n0=4, n=40, alpha=0.05)
    whole = certify(model, data, plan, 2, seed=0)[0]["images"]
    monkeypatch.setattr(certify_module, "all_reduce_sum", lambda t, ctx: t)  # each rank alone: its own images
    shards = [certify(model, data, plan, 2, seed=0, ctx=DistContext(rank=r, world=2))[0]["images"] for r in range(2)]
    assert [im["index"] for im in shards[0]] == [0, 2, 4] and [im["index"] for im in shards[1]] == [1, 3]
    assert sorted(shards[0] + shards[1], key=lambda im: im["index"]) == whole


# A model whose per-pixel class probability is known: class 1 where red + noise exceeds a per-pixel
# threshold t_i, so on a 0.5-grey image P(class 1 at i) = Phi((0.5 - t_i) / sigma).
class Ramp(nn.Module):
    def __init__(self, thresholds: torch.Tensor):
        super().__init__()
        self.t = thresholds

    def forward(self, x):
        r = x[:, 0] - self.t
        return torch.stack([torch.zeros_like(r), r], dim=1)


def _independent_certificate(model, image, labels, index, seed, sigma, n0, n, tau, alpha, method, scipy_stats, multitest):
    """SegCertify for one image recomputed from scratch: the noise of sample j of phase p drawn from
    a generator seeded by sample_seed(seed, index, p, j) (the documented scheme), counts in NumPy,
    p-values by SciPy, the correction by statsmodels. Returns (certified map with -1 = abstain, counts)."""
    import numpy as np

    def counts(phase, m):
        out = np.zeros((2, *image.shape[-2:]), dtype=np.int64)
        for j in range(m):
            gen = torch.Generator().manual_seed(sample_seed(seed, index, phase, j))
            pred = model((image + sigma * torch.randn(image.shape, generator=gen))[None]).argmax(1)[0].numpy()
            for c in range(2):
                out[c] += pred == c
        return out

    selected = counts(0, n0).argmax(0)  # the n0 selection samples pick the class (ties: the lowest)
    count = np.take_along_axis(counts(1, n), selected[None], 0)[0]  # the n estimation samples count it
    valid = labels.numpy() != 255
    pvalues = scipy_stats.binom.sf(count[valid] - 1, n, tau)
    rejected, *_ = multitest.multipletests(pvalues, alpha=alpha, method=method)
    certified = np.full(selected.shape, -1)
    certified[valid] = np.where(rejected, selected[valid], -1)
    return certified, count


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_a_partial_certification_equals_an_independent_computation(method, scipy_stats, multitest):

    sigma, n0, n, tau, alpha, seed = 0.25, 20, 200, 0.75, 0.05, 7
    p1 = torch.linspace(0.03, 0.995, 64).reshape(8, 8)  # P(class 1) per pixel, many near tau
    p1 = p1[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))]
    model = Ramp(0.5 - sigma * torch.tensor(scipy_stats.norm.ppf(p1.numpy()), dtype=torch.float32))
    labels = (p1 > 0.5).long().repeat(2, 1, 1)
    labels[0, :2] = 255  # ignored pixels are not tested
    labels[1, 3, ::2] = 1 - labels[1, 3, ::2]  # some wrong labels
    data = Images(torch.full((2, 3, 8, 8), 0.5), labels)
    plan = CertifyPlan(sigma=sigma, n0=n0, n=n, alpha=alpha, taus=(tau,), correction=method, batch_size=9, seed=seed)
    records = certify(model, data, plan, 2, seed=0)
    from ddcat.certification.smoothing import binomial_log_sf_table

    for i in range(2):
        ref, ref_count = _independent_certificate(model, data.images[i], labels[i], i, seed, sigma, n0, n, tau, alpha, method, scipy_stats, multitest)
        valid = labels[i].numpy() != 255
        assert 0 < (ref[valid] == -1).sum() < valid.sum()  # partial: some pixels certified, some abstain
        cert = certify_module.certify_image(model, data.images[i], labels[i], i, plan, seed, 2)
        assert cert.count.numpy().tolist() == ref_count.tolist()
        assert cert.certified(binomial_log_sf_table(n, tau), alpha, method).numpy().tolist() == ref.tolist()
        im = records[0]["images"][i]
        correct = ((ref == labels[i].numpy()) & valid).sum()
        assert im["certified_pixel_accuracy"] == pytest.approx(correct / valid.sum(), abs=1e-12)
        assert im["abstain_rate"] == pytest.approx((ref[valid] == -1).sum() / valid.sum(), abs=1e-12)
    assert 0 < records[0]["abstain_rate"] < 1


class Phases(nn.Module):
    """Sample k (in the order the samples reach the model): class 1 everywhere for the first n0,
    then class 1 for the next m and class 0 for the rest."""

    def __init__(self, n0: int, m: int):
        super().__init__()
        self.n0, self.m, self.k = n0, m, 0

    def forward(self, x):
        out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        for b in range(x.shape[0]):
            one = self.k < self.n0 or self.k - self.n0 < self.m
            out[b, 1 if one else 0] = 1.0
            self.k += 1
        return out


def test_the_class_comes_from_the_selection_samples_and_the_count_from_the_estimation_samples():
    # selection (5 samples): class 1; estimation (60): class 1 in 20, class 0 in 40. The class is
    # 1 (not the estimation's majority 0), its count 20 (not 25: no selection sample is counted)
    plan = CertifyPlan(sigma=0.1, n0=5, n=60, alpha=0.05, batch_size=7)
    cert = certify_module.certify_image(Phases(5, 20), torch.rand(3, 4, 4), torch.zeros(4, 4, dtype=torch.long), 0, plan, 0, 2)
    assert cert.selected.unique().tolist() == [1] and cert.count.unique().tolist() == [20]
    assert cert.smoothed.unique().tolist() == [0]  # the smoothed prediction: the estimation's majority


def _hand_steps(tau, alpha, pixels):
    """The smallest n with tau^n <= alpha / pixels, by counting up."""
    n = 1
    while tau**n > alpha / pixels:
        n += 1
    return n


def test_the_sample_check_uses_the_largest_labelled_family_of_the_dataset(monkeypatch):
    # 8 x 8 images (64 pixels) with 4, 10 and 6 labelled pixels: the family of the Holm / Bonferroni
    # correction is 10 pixels at most, so n for 10 suffices although it does not for 64 (H x W)
    labels = torch.full((3, 8, 8), 255)
    for i, k in enumerate((4, 10, 6)):
        labels[i].view(-1)[:k] = 0
    data = Images(torch.full((3, 3, 8, 8), 0.5), labels)
    tau, alpha = 0.75, 0.01
    need = _hand_steps(tau, alpha, 10)
    assert need < _hand_steps(tau, alpha, 64) and _hand_steps(tau, alpha, 4) < need  # the case separates the three
    model = Recorder()
    with pytest.raises(DdcatError, match=f"10 labelled pixels.*use --n {need} or more"):
        certify(model, data, CertifyPlan(n0=2, n=need - 1, alpha=alpha, taus=(tau,)), 2, seed=0)
    assert model.seen == []  # said before any sampling
    records = certify(model, data, CertifyPlan(n0=2, n=need, alpha=alpha, taus=(tau,)), 2, seed=0)
    assert records[0]["certified_pixel_accuracy"] == 1.0  # the constant model: every labelled pixel certified
    # under torchrun the CLI's flag is --num-samples (torchrun's parser takes --n as its own)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    with pytest.raises(DdcatError, match=f"use --num-samples {need} or more"):
        certify(model, data, CertifyPlan(n0=2, n=need - 1, alpha=alpha, taus=(tau,)), 2, seed=0)


class Coded(nn.Module):
    """Predicts class round(5 * green) (4 classes); where blue > 0.5 the red channel against 0.5
    decides between classes 1 and 0 (a coin flip on a 0.5 red: such a pixel abstains)."""

    def forward(self, x):
        logits = nn.functional.one_hot((x[:, 1] * 5).round().clamp(0, 3).long(), 4).permute(0, 3, 1, 2).float() * 10
        flip = torch.zeros_like(logits)
        flip[:, 1] = (x[:, 0] - 0.5) * 100
        return torch.where((x[:, 2] > 0.5)[:, None], flip, logits)


def test_per_image_certified_miou_by_hand():
    # image 0 (1 x 6): labels 0 0 1 1 2 ignore, certified prediction 0 1 1 abstain 2 (0);
    # class 0: TP 1, union 2 + 1 - 1 = 2 -> 1/2; class 1: TP 1, union 2 + 2 - 1 = 3 -> 1/3;
    # class 2: 1; class 3 absent from labels and predictions: left out -> (1/2 + 1/3 + 1) / 3 = 11/18.
    # image 1: all class 3, all right -> 1. image 2: no labelled pixel -> None.
    images = torch.zeros(3, 3, 1, 6)
    images[:, 0] = 0.5
    images[0, 1] = torch.tensor([0, 0.2, 0.2, 0, 0.4, 0])
    images[0, 2, 0, 3] = 1.0
    images[1:, 1] = 0.6
    labels = torch.tensor([[[0, 0, 1, 1, 2, 255]], [[3] * 6], [[255] * 6]])
    r = certify(Coded(), Images(images, labels), CertifyPlan(sigma=0.01, n0=4, n=100, alpha=0.01, taus=(0.75,)), 4, seed=0)[0]
    im = r["images"]
    assert im[0]["certified_mIoU"] == pytest.approx(11 / 18) and im[1]["certified_mIoU"] == 1.0 and im[2]["certified_mIoU"] is None
    assert im[0]["certified_pixel_accuracy"] == pytest.approx(3 / 5) and im[0]["abstain_rate"] == pytest.approx(1 / 5)
    # the dataset's: class 3 counts there (IoU 1): (1/2 + 1/3 + 1 + 1) / 4
    assert r["certified_mIoU"] == pytest.approx(17 / 24)


def test_plan_checks_name_the_flag():
    for kwargs, needle in [
        ({"sigma": 0.0}, "--sigma"), ({"sigma": math.inf}, "--sigma"), ({"n0": 0}, "--n0"), ({"n": 0}, "--n"),
        ({"alpha": 1.0}, "--alpha"), ({"taus": (0.5,)}, "--tau"), ({"taus": (1.0,)}, "--tau"), ({"correction": "sidak"}, "--correction"),
        ({"batch_size": 0}, "--batch-size"),
    ]:
        with pytest.raises(DdcatError, match=needle):
            CertifyPlan(**kwargs)
    with pytest.raises(DdcatError, match="use --n 53 or more"):
        CertifyPlan(n=52, alpha=1e-3, taus=(0.75,)).check_samples(4096, "an image of 64 x 64")
    CertifyPlan(n=53, alpha=1e-3, taus=(0.75,)).check_samples(4096, "an image of 64 x 64")


# ----------------------------------------------------------------------------- the command
RECORD_KEYS = {"tau", "sigma", "radius", "n0", "n", "alpha", "correction", "certified_pixel_accuracy", "abstain_rate",
               "certified_mIoU", "smoothed_pixel_accuracy", "images"}


def test_ddcat_certify_writes_records_and_table(clean_run, tmp_path, capsys):
    out = tmp_path / "cert"
    args = ["certify", "--checkpoint", str(clean_run / "last.pt"), "--sigma", "64/255", "--n0", "4", "--n", "60",
            "--alpha", "0.01", "--tau", "0.75", "--tau", "0.6", "--max-images", "2", "--out", str(out), "--no-progress"]
    assert cli_main(args) == 0
    data = json.loads((out / "certify.json").read_text())
    assert [r["tau"] for r in data["records"]] == [0.75, 0.6]
    for r in data["records"]:
        assert RECORD_KEYS <= set(r)
        assert r["sigma"] == pytest.approx(64 / 255) and r["num_images"] == 2 and len(r["images"]) == 2
        assert 0 <= r["certified_pixel_accuracy"] <= 1 - r["abstain_rate"] + 1e-12  # a certified pixel did not abstain
    assert "tau=0.6" in (out / "table.txt").read_text()
    capsys.readouterr()
    assert cli_main(args) == 2  # an existing certification is kept unless --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize("flags, needle", [
    (["--sigma", "-1"], "--sigma"),
    (["--n0", "0"], "--n0"),
    (["--alpha", "1.5"], "--alpha"),
    (["--tau", "0.3"], "--tau"),
    (["--n", "20", "--alpha", "0.001"], "use --n 49 or more"),  # 32 x 32 = 1024 pixels at tau 0.75
    (["--correction", "sidak"], "--correction"),
])
def test_ddcat_certify_bad_input_is_one_line(clean_run, tmp_path, capsys, flags, needle):
    out = tmp_path / "cert"
    assert cli_main(["certify", "--checkpoint", str(clean_run / "last.pt"), *flags, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddcat: error:") and needle in err[0]
    assert not out.exists()


def test_ddcat_certify_under_torchrun_names_num_samples(clean_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # what torchrun's agent sets in every process it starts
    out = tmp_path / "cert"
    args = ["certify", "--checkpoint", str(clean_run / "last.pt"), "--num-samples", "20", "--alpha", "0.001", "--out", str(out), "--no-progress"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-samples 20 cannot certify" in err[0] and "use --num-samples 49 or more" in err[0] and "--n " not in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- models made for smoothing
from ddcat.config import load_config  # noqa: E402
from ddcat.models import build_model  # noqa: E402
from ddcat.training import build_method  # noqa: E402
from ddcat.training.base import gaussian_noise  # noqa: E402


class Through(nn.Module):
    """Records the training forward's inputs and passes them to ``model``."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_gaussian_noise_is_sigma_times_a_standard_normal_from_the_global_rng():
    x = torch.rand(4, 3, 32, 32)
    assert gaussian_noise(x, 0.0) is x
    torch.manual_seed(5)
    a = gaussian_noise(x, 0.25)
    torch.manual_seed(5)
    assert torch.equal(a, x + 0.25 * torch.randn_like(x))  # the training RNG: resume replays it
    assert abs(float(((a - x) / 0.25).std()) - 1) < 0.03


@pytest.mark.parametrize("method", ["clean", "sat"])
def test_noise_training_adds_noise_to_the_clean_share_only(method):
    cfg = load_config(None, [f"train.method={method}", "train.noise_sigma=0.5", "train.batch_size=4", "data.num_classes=4", "attack.steps=1"])
    m = build_method(cfg)
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", 4, width=8)
    net = Through(model)
    images, labels = torch.rand(4, 3, 32, 32), torch.randint(0, 4, (4, 32, 32))
    model.train()
    before = copy.deepcopy(model)  # the training forward moves BatchNorm's running statistics
    m.loss(net, model, images, labels, seed=1)
    seen = net.seen[-1]
    n_clean = 4 if method == "clean" else 2
    noise = (seen[:n_clean] - images[:n_clean]) / 0.5
    assert abs(float(noise.std()) - 1) < 0.05 and abs(float(noise.mean())) < 0.05
    if method == "sat":  # the adversarial share is the attack's output on the noise-free images, untouched
        adv = m.attack(before, images[2:], labels[2:], seed=1)
        assert torch.equal(seen[2:], adv)


def test_noise_sigma_is_checked_once_in_the_config():
    with pytest.raises(DdcatError, match="train.noise_sigma"):
        load_config(None, ["train.noise_sigma=-0.1"])
    with pytest.raises(DdcatError, match="clean and sat only"):
        load_config(None, ["train.noise_sigma=0.25", "train.method=ddcat"])
    assert load_config(None, ["train.noise_sigma=0.25", "train.method=sat"])["train"]["noise_sigma"] == 0.25


def test_sat_on_adversarial_images_only_refuses_noise(tmp_path, capsys):
    # adv_fraction 1: no clean share, so the noise (on the clean share) would silently be no noise
    with pytest.raises(DdcatError, match=r"'train.noise_sigma' \(0.25\).*'train.adv_fraction' \(1.0\)"):
        load_config(None, ["train.noise_sigma=0.25", "train.method=sat", "train.adv_fraction=1.0"])
    assert load_config(None, ["train.noise_sigma=0", "train.method=sat", "train.adv_fraction=1.0"])["train"]["adv_fraction"] == 1.0
    assert load_config(None, ["train.noise_sigma=0.25", "train.method=clean", "train.adv_fraction=1.0"])["train"]["noise_sigma"] == 0.25
    out = tmp_path / "run"
    assert cli_main(["train", "--method", "sat", "--set", "train.adv_fraction=1", "--set", "train.noise_sigma=0.25", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.noise_sigma" in err[0] and "train.adv_fraction" in err[0] and not out.exists()


def test_a_noise_run_resumes_bit_exactly(tmp_path):
    """4 iterations in one go equal 2 + a resume from the iteration-2 checkpoint (the noise is drawn
    from the training RNG, reseeded per (seed, iteration, shard))."""
    from conftest import tiny_sets

    from ddcat.checkpoint import load_checkpoint

    sets = [*tiny_sets(iters=4), "--set", "train.save_every=2", "--set", "train.noise_sigma=0.25"]
    full = tmp_path / "full"
    assert cli_main(["train", "--no-progress", "--method", "sat", "--set", "attack.steps=1", *sets, "--out", str(full)]) == 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "last.pt").write_bytes((full / "last.prev.pt").read_bytes())  # the iteration-2 checkpoint
    assert load_checkpoint(resumed / "last.pt")["iteration"] == 2
    assert cli_main(["train", "--no-progress", "--method", "sat", "--set", "attack.steps=1", *sets, "--out", str(resumed), "--resume"]) == 0
    a, b = load_checkpoint(full / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the noise matters: without it the weights differ
    plain = tmp_path / "plain"
    assert cli_main(["train", "--no-progress", "--method", "sat", "--set", "attack.steps=1", *sets[:-2], "--out", str(plain)]) == 0
    c = load_checkpoint(plain / "last.pt")["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# ----------------------------------------------------------------------------- the report card
def _rec(attack, steps, miou, eps=0.03, **extra):
    return {"attack": attack, "steps": steps, "eps": eps, "source": "self", "mIoU": miou, **extra}


def _cert(sigma, tau, acc, abstain):
    return {"sigma": sigma, "tau": tau, "radius": certified_radius(sigma, tau), "certified_pixel_accuracy": acc, "abstain_rate": abstain}


def test_card_puts_each_models_numbers_under_its_threat_model():
    from ddcat.reporting.card import card_markdown, card_rows

    a = [_rec("clean", 0, 0.8), _rec("bim", 7, 0.4), _rec("sea", 10, 0.1), _rec("worst", 7, 0.2)]
    b = [_rec("clean", 0, 0.7), _rec("bim", 7, 0.5), _rec("sea", 10, 0.3)]
    columns, rows = card_rows([("A", a, [_cert(0.25, 0.75, 0.6, 0.3)]), ("B", b, [])])
    assert columns[0] == "clean mIoU" and "Linf 0.03" in columns[1]
    assert columns[2].startswith("sea mIoU (Linf 0.03") and "10 it." in columns[2]  # SEA before the worst case
    assert "L2 0.169, sigma 0.25, tau 0.75" in columns[3] and columns[4].startswith("abstain")
    assert rows == [("A", [0.8, 0.4, 0.1, 0.6, 0.3]), ("B", [0.7, 0.5, 0.3, None, None])]
    md = card_markdown([("A", a, [_cert(0.25, 0.75, 0.6, 0.3)])])
    assert "| A | 0.800 | 0.400 | 0.100 | 0.600 | 0.300 |" in md and "lower bounds" in md


def test_card_takes_the_strongest_attack_from_the_registry():
    """The ensemble when present (its greedy mIoU is never above another attack's of its evaluation),
    whatever the other records hold; without a ranked attack, the lowest attacked record."""
    from ddcat.attacks.registry import strongest_first
    from ddcat.reporting.card import card_rows, strongest

    assert strongest_first() == ("ensemble", "sea", "worst", "apgd")
    a = [_rec("clean", 0, 0.8), _rec("bim", 7, 0.4), _rec("sea", 300, 0.2), _rec("worst", 7, 0.25), _rec("ensemble", 300, 0.15)]
    assert strongest(a)["attack"] == "ensemble"
    columns, rows = card_rows([("A", a, [])])
    assert columns[2] == "ensemble mIoU (Linf 0.03, 300 it.)" and rows == [("A", [0.8, 0.4, 0.15])]
    unranked = [_rec("clean", 0, 0.8), _rec("bim", 7, 0.4), _rec("padam-ce", 200, 0.3), _rec("pgd", 10, 0.35)]
    assert strongest(unranked)["attack"] == "padam-ce"
    columns, _ = card_rows([("A", unranked, [])])
    assert columns[2] == "padam-ce mIoU (Linf 0.03, 200 it.)"  # an iteration attack: its budget
    assert strongest([_rec("clean", 0, 0.8)]) is None


@pytest.mark.slow
def test_experiment_trains_a_noise_run_certifies_it_and_reports_the_card(tmp_path, capsys):
    import yaml

    from ddcat.experiment_file import packaged_config

    spec = {
        "name": "card", "base": str(packaged_config("synthetic.yaml")),
        "set": {"model": {"width": 8}, "data": {"image_size": 32, "num_train": 16, "num_val": 3, "num_classes": 4},
                "train": {"iters": 2, "batch_size": 4, "crop_size": 32, "save_every": 2}, "eval": {"batch_size": 4}},
        "models": {"pspnet": {"model": {"arch": "pspnet"}}}, "methods": ["sat"], "seeds": [0],
        "extra_runs": [{"label": "pspnet-noise", "method": "clean", "seeds": [0], "set": {"train": {"noise_sigma": 0.25}}}],
        "evaluation": {"steps": [1, 7], "strong": ["pgd"], "strong_steps": 2,
                       "certify": {"n0": 3, "n": 60, "alpha": 0.01, "max_images": 2, "runs": ["pspnet-noise/clean", "pspnet/sat"]}},
    }
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert cli_main(["experiment", str(path), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    noise_run = next(r for r in results["runs"] if r["arch"] == "pspnet-noise")
    assert json.loads((Path(noise_run["dir"]) / "run.json").read_text())  # trained like any run
    from ddcat.checkpoint import load_checkpoint

    assert load_checkpoint(noise_run["checkpoint"])["config"]["train"]["noise_sigma"] == 0.25
    certs = results["certifications"]
    assert [(c["arch"], c["method"]) for c in certs] == [("pspnet-noise", "clean"), ("pspnet", "sat")]
    assert all(c["records"][0]["num_images"] == 2 and c["records"][0]["n"] == 60 for c in certs)
    report = (out / "report.md").read_text()
    assert "## Report card" in report and "pspnet-noise No Defense (seed 0)" in report and "Report card" in printed
    # the result cache's key carries the certification's version: a change to it is never served a stale cache
    from ddcat.certification import CERTIFY_VERSION

    caches = sorted(Path(noise_run["dir"]).glob("eval/certify-*.json"))
    assert len(caches) == 1 and json.loads(caches[0].read_text())["key"]["certify_version"] == CERTIFY_VERSION
    # ddcat report over the run folders finds the certification caches and prints the same card
    assert cli_main(["report", str(out / "runs"), "--out", str(tmp_path / "rep")]) == 0

    def card(text: str) -> str:
        text = text[text.index("## Report card"):]
        return text[:text.index("\n## ", 4)]

    # (the experiment lists its certifications in the file's order, the report in the grid's)
    assert sorted(card((tmp_path / "rep" / "report.md").read_text()).splitlines()) == sorted(card(report).splitlines())
    # a rerun reuses the certification
    assert cli_main(["experiment", str(path), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["certifications"] == certs


@pytest.mark.parametrize("certify, needle", [
    ({"sigma": 0}, "sigma"),
    ({"runs": ["pspnet/ddcat"]}, "does not train"),
    ({"nn": 3}, "unknown key"),
    ({"tau": [0.2], "runs": ["pspnet/sat"]}, "tau must lie in"),
])
def test_experiment_certify_errors_come_before_any_training(tmp_path, certify, needle):
    import yaml

    from ddcat.experiment_file import packaged_config

    spec = {"base": str(packaged_config("synthetic.yaml")), "models": {"pspnet": {}}, "methods": ["sat"], "seeds": [0],
            "evaluation": {"certify": certify}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DdcatError, match=needle):
        from ddcat.experiment import certify_plan, load_experiment

        certify_plan(load_experiment(path))
    assert cli_main(["experiment", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.slow
def test_two_gloo_processes_certify_like_one(clean_run, tmp_path):
    """torchrun with 2 ranks: each certifies every other image; the reduced records equal one process's.
    (``--num-samples``: torchrun's own parser takes ``--n`` for an abbreviation of its options.)"""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "ddcat", "certify", "--checkpoint", str(clean_run / "last.pt"), "--n0", "3", "--num-samples", "60", "--alpha", "0.01",
            "--set", "data.num_val=3", "--no-progress"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args, "--out", str(tmp_path / "two")]
    one = [sys.executable, *args, "--out", str(tmp_path / "one")]
    for cmd in (two, one):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "certify.json").read_text()) for d in ("two", "one"))
    assert a["run"]["world_size"] == 2
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a["records"]] == [{k: v for k, v in r.items() if k not in drop} for r in b["records"]]
