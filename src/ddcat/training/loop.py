"""The one training loop every method shares (Alg. 1 / Alg. 3 outer loop).

    for T in range(start, T_max):
        load mini-batch D_b (a pure function of seed and T)
        loss = method.loss(...)        # attack + training forward, method-specific
        SGD step with poly lr
        log one JSON line; every save_every iterations and at the end write last.pt atomically
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ddcat import activity
from ddcat.attacks import FGSM, build_attack
from ddcat.checkpoint import config_spec, initial_weights, load_state, remove_stale_temporaries, resume_checkpoint, save_last
from ddcat.checkpoint.io import own_entry, per_process, rng_state, set_rng_state, training_checkpoint
from ddcat.config import CHOICES, SINGLE_STEP_METHODS, check_value
from ddcat.data import build_dataset
from ddcat.distributed import DistContext, barrier, init_distributed
from ddcat.errors import DdcatError
from ddcat.outdir import write_text
from ddcat.runinfo import write_run_files
from ddcat.training import batchnorm as bn
from ddcat.training.base import Method
from ddcat.training.clean import CleanTraining
from ddcat.training.ddcat import DivideAndConquerTraining
from ddcat.training.fgsm_rs import FastAdversarialTraining, RandomStartFGSM
from ddcat.training.free import FreeAdversarialTraining
from ddcat.training.optim import build_optimizer, set_poly_lr
from ddcat.training.sampling import EpochIndexed, ResumableBatchSampler, collate, iteration_seed
from ddcat.training.sat import StandardAdversarialTraining
from ddcat.training.watch import RobustnessWatch, check_record, fixed_batches
from ddcat.trainlog import ITER, LOG_NAME, LOSS, LR, TIME, LogWriter, truncated_text

#: The training methods (``train.method``): the config's list of choices.
METHODS = CHOICES["train.method"]


def build_method(cfg: dict[str, Any]) -> Method:
    """The training method ``cfg`` names, built from its ``train.*`` and ``attack.*`` values: the
    only place below the command line that reads a method's hyper-parameters from the config."""
    t, a = cfg["train"], cfg["attack"]
    name = check_value("train.method", t["method"])
    if name == "clean":
        return CleanTraining(deep_sup_weight=t["deep_sup_weight"], noise_sigma=t["noise_sigma"])
    method = _adversarial_method(name, t, a, training_attack(a, single_step=name in SINGLE_STEP_METHODS))
    method.attack_dtype = a["precision"]
    return method


def training_attack(a: dict[str, Any], single_step: bool = False):
    """The training attack the ``attack`` section names: ``fgsm-rs`` (for ``--method fgsm-rs``
    always) is :class:`RandomStartFGSM` with step ``fgsm_rs_step`` x eps; ``attack.precision: bf16``
    builds it with ``precision="autocast"`` (the method runs it under bf16 autocast)."""
    precision = "autocast" if a["precision"] == "bf16" else "fp32"
    if single_step or a["name"] == "fgsm-rs":
        return RandomStartFGSM(eps=a["eps"], alpha=a["fgsm_rs_step"] * a["eps"], precision=precision)
    return build_attack(a["name"], eps=a["eps"], alpha=a["alpha"], steps=a["steps"], precision=precision)


def _adversarial_method(name: str, t: dict[str, Any], a: dict[str, Any], attack) -> Method:
    if name == "fgsm-rs":
        return FastAdversarialTraining(attack, adv_fraction=t["adv_fraction"], deep_sup_weight=t["deep_sup_weight"])
    if name == "free":  # the watch's "training attack" of free AT: FGSM at eps, its step from delta = 0
        fgsm = FGSM(eps=a["eps"], precision=attack.precision)
        return FreeAdversarialTraining(fgsm, eps=a["eps"], replays=t["free_replays"], adv_fraction=t["adv_fraction"], deep_sup_weight=t["deep_sup_weight"])
    if name == "sat":
        return StandardAdversarialTraining(
            attack, adv_fraction=t["adv_fraction"], deep_sup_weight=t["deep_sup_weight"], noise_sigma=t["noise_sigma"]
        )
    return DivideAndConquerTraining(
        attack,
        division=name,
        adv_fraction=t["adv_fraction"],
        deep_sup_weight=t["deep_sup_weight"],
        lambdas=(t["lambda_main"], t["lambda_aux"], t["lambda_mask"]),
        mask_ignore=t["mask_ignore"],
    )


def optimizer_for(model: nn.Module, train_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimiser the ``train`` section names, with its learning rates and decay."""
    t = train_cfg
    return build_optimizer(model, t["optimizer"], t["lr"], t["head_lr_mult"], t["momentum"], t["weight_decay"])


def replayed(loader, start: int, stop: int, replays: int):
    """(iteration, batch) for iterations start .. stop-1, each batch of ``loader`` (which yields batch
    start // replays, start // replays + 1, ...) used for ``replays`` consecutive iterations."""
    batches = iter(loader)
    batch = None
    for iteration in range(start, stop):
        if batch is None or iteration % replays == 0:
            batch = next(batches, None)
            if batch is None:
                return
        yield iteration, batch


def _set_method_state(method: Method, ckpt: dict[str, Any], path: Path, ctx: DistContext) -> None:
    """The method's carried state (free AT's perturbation) from ``last.pt``; another world size restarts it."""
    state = own_entry(ckpt, "method_state", path, ctx)
    if state is not None:
        try:
            method.load_state_dict(state, ctx.device)
        except DdcatError as exc:
            raise DdcatError(f"checkpoint {path}: {exc}") from None


def _build_watch(cfg: dict[str, Any], method: Method, ctx: DistContext) -> RobustnessWatch:
    """The robustness watch on the first ``train.robust_check_images`` validation images."""
    t, a = cfg["train"], cfg["attack"]
    batches = fixed_batches(build_dataset(cfg, "val"), t["robust_check_images"], cfg["eval"]["batch_size"])
    attack = getattr(method, "attack", None)
    context = getattr(method, "attack_context", None)
    precision = "autocast" if a["precision"] == "bf16" else "fp32"
    return RobustnessWatch(batches, cfg["data"]["num_classes"], attack, a["eps"], a["alpha"], precision=precision, attack_context=context)


def _autocast(cfg: dict[str, Any], device: torch.device):
    amp = cfg["train"]["amp"]
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def step_shards(cfg, method: Method, net: nn.Module, model: nn.Module, images, labels, iteration: int, ctx: DistContext, scaler) -> dict[str, float]:
    """Forward/backward of this process's accum_steps shards; gradients summed as a mean over all shards.

    Shard s = rank * accum_steps + a draws its RNG (dropout, random starts) from
    (seed, iteration, s), so a run on W processes equals one on 1 process with W x accum_steps.
    """
    steps = cfg["train"]["accum_steps"]
    size = images.shape[0] // steps
    snap = bn.snapshot(model) if steps > 1 else None
    results, shard_stats = [], []
    for a in range(steps):
        shard = ctx.rank * steps + a
        seed = iteration_seed(cfg["seed"], iteration, shard)
        torch.manual_seed(seed)
        random.seed(seed)
        if snap is not None:
            bn.restore(model, snap)
        sync = net.no_sync() if ctx.enabled and a < steps - 1 else contextlib.nullcontext()
        with sync:
            with _autocast(cfg, ctx.device):
                loss, stats = method.loss(
                    net, model, images[a * size : (a + 1) * size], labels[a * size : (a + 1) * size], seed=seed % (2**31)
                )
            if not torch.isfinite(loss):
                raise DdcatError(f"loss became {loss.item()} at iteration {iteration}; lower train.lr")
            scaler.scale(loss / steps).backward()
        if snap is not None:
            results.append(bn.snapshot(model))
        shard_stats.append(stats)
    if snap is not None:
        bn.set_mean(model, results)
    bn.all_reduce_mean(model, ctx)
    return {k: sum(s[k] for s in shard_stats) / steps for k in shard_stats[0]}


def train(cfg: dict[str, Any], out: str | Path, resume: str | Path | bool = False, device: str | None = None, progress: bool = True) -> Path:
    """Train as ``cfg`` says; returns the path of ``last.pt``. Rank 0 writes all outputs."""
    out = Path(out)
    ctx = init_distributed(device)
    method = build_method(cfg)
    t = cfg["train"]
    if t["batch_size"] % (ctx.world * t["accum_steps"]):
        raise DdcatError(
            f"train.batch_size={t['batch_size']} must be divisible by processes x train.accum_steps = {ctx.world} x {t['accum_steps']}"
        )
    local_batch = t["batch_size"] // (ctx.world * t["accum_steps"])
    method.split(local_batch)  # a batch the method cannot split fails before any work
    if method.replays > 1 and t["accum_steps"] > 1:
        raise DdcatError(f"--method {method.name} carries one perturbation per process: use train.accum_steps=1 (got {t['accum_steps']})")

    spec = config_spec(cfg, ddc=method.needs_ddc_heads)  # the config is the caller's: its model.factory runs
    ckpt = None
    if resume:
        path, ckpt = resume_checkpoint(out, resume, t["iters"])
        if ckpt["model_spec"] != spec.fields:
            raise DdcatError(f"checkpoint {path} was trained with another model ({ckpt['model_spec']}) than the config asks for ({spec.fields})")
        spec.check_state(ckpt["model"], path)
    torch.manual_seed(cfg["seed"])  # the same initial weights on every rank and every run of this seed
    model = spec.build(pretrained=None if ckpt else initial_weights(cfg)).to(ctx.device)
    if ctx.enabled and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = optimizer_for(model, t)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=t["amp"] == "fp16")
    start = 0
    if ckpt is not None:
        load_state(model, ckpt["model"], path)
        optimizer.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["iteration"])
        set_rng_state(ckpt["rng"], ctx)
        _set_method_state(method, ckpt, path, ctx)

    net: nn.Module = model
    if ctx.enabled:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # BatchNorm buffers are averaged over ranks after each iteration (training/batchnorm.py),
        # so DDP need not broadcast them at every forward
        # a user model may hold parameters its forward does not use: DDP must then look for them
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, forward_sync_buffers=False, find_unused_parameters=spec.unused_parameters
        )
    if t["compile"]:
        net = torch.compile(net)

    dataset = build_dataset(cfg, "train")
    # iteration T trains on batch T // replays (free AT replays each batch; 1 for every other method)
    m = method.replays
    sampler = ResumableBatchSampler(len(dataset), t["batch_size"], cfg["seed"], start // m, -(-t["iters"] // m), ctx.rank, ctx.world)
    workers = cfg["data"]["workers"]
    loader = torch.utils.data.DataLoader(
        EpochIndexed(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=workers > 0,
    )

    watch = _build_watch(cfg, method, ctx) if ctx.is_main and t["robust_check_every"] else None
    log = None
    if ctx.is_main:  # nothing is written before the resume is known to work
        remove_stale_temporaries(out)
        log_text = truncated_text(out / LOG_NAME, start)
        write_run_files(out, cfg, "train", {"world_size": ctx.world, "device": str(ctx.device), "resumed_from": start})
        write_text(out / LOG_NAME, log_text)  # whole or not at all; a full disk names the file
        log = LogWriter(out / LOG_NAME)
    bar = tqdm(total=t["iters"], initial=start, desc=f"train {method.name}", disable=not (progress and ctx.is_main), dynamic_ncols=True)
    last = out / "last.pt"
    model.train()
    try:
        for iteration, (images, labels) in replayed(loader, start, t["iters"], m):
            tic = time.perf_counter()
            activity.note(f"training iteration {iteration + 1}", images.shape[0], images.shape[-2:], activity.TRAIN_REMEDY)
            images = images.to(ctx.device, non_blocking=True)
            labels = labels.to(ctx.device, non_blocking=True)
            if t["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            lr = set_poly_lr(optimizer, t["lr"], iteration, t["iters"], t["poly_power"])
            optimizer.zero_grad(set_to_none=True)
            stats = step_shards(cfg, method, net, model, images, labels, iteration, ctx, scaler)
            scaler.step(optimizer)
            scaler.update()
            done = iteration + 1
            if watch is not None and done % t["robust_check_every"] == 0:
                stats = {**stats, **check_record(watch(model, ctx.device), done)}
            if log is not None and (done % t["log_every"] == 0 or done == t["iters"] or done % (t["robust_check_every"] or t["iters"]) == 0):
                log.write({ITER: done, LR: lr, TIME: time.perf_counter() - tic, **stats})
            bar.update(1)
            bar.set_postfix(loss=f"{stats[LOSS]:.3f}")
            if done % t["save_every"] == 0 or done == t["iters"]:
                rng = rng_state(ctx)
                state = method.state_dict()
                method_state = per_process(state, ctx) if state else None
                if ctx.is_main:
                    save_last(last, training_checkpoint(
                        spec.fields, model, cfg, optimizer, done, t["poly_power"], sampler.per_epoch, rng, ctx.world, method_state
                    ))
                barrier(ctx)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return last
