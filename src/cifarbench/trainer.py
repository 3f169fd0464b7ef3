"""The training loop: one loop for every model, optimizer, augmentation, device and precision.

Read top to bottom: device and precision → data on the device → model, optimizer, schedule →
the loop (set lr, forward, backward, step, accumulate on the device) → evaluation → files.
Everything is decided before the loop; the step itself does no host–device synchronisation.
"""
from __future__ import annotations

import contextlib
import logging
import math
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cifarbench import __version__
from cifarbench.aug import build_augment, build_mix
from cifarbench.data import DeviceLoader, build_preprocess, load_cifar10
from cifarbench.files import atomic_write_json
from cifarbench.models import build_model, count_params
from cifarbench.optim import build_optimizer
from cifarbench.registry import ConfigError
from cifarbench.runlog import plot_curves, write_metrics
from cifarbench.sched import build_schedule, progress

log = logging.getLogger(__name__)
AMP_MODES = ("auto", "bf16", "fp16", "off")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ConfigError(f"trainer.device={name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but PyTorch sees no CUDA GPU; use trainer.device=auto or cpu")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    if mode not in AMP_MODES:
        raise ConfigError(f"trainer.amp={mode!r}; choose one of {', '.join(AMP_MODES)}")
    if mode == "auto":  # on CPUs, bf16 autocast is slower than fp32 for these convnets
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError(f"trainer.amp=fp16 needs a CUDA device (got {device.type}); use bf16 or off")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DeviceLoader, autocast) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the loader; one host sync at the end."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.images.device)
    correct = torch.zeros((), device=loader.images.device, dtype=torch.long)
    for images, labels in loader:
        with autocast:
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    n = len(loader.images)
    return loss_sum.item() / n, correct.item() / n


def build_criterion(mix: str | None, label_smoothing: float):
    """Cross-entropy on hard or soft (mixed) targets; SPEC's BC-learning trains with KL divergence."""
    if mix == "bc":
        return lambda logits, targets: F.kl_div(F.log_softmax(logits.float(), 1), targets, reduction="batchmean")
    return lambda logits, targets: F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train `cfg.model` per the config, write metrics.csv, curves.png and summary.json into
    `run_dir`, and return the summary."""
    t = cfg.trainer
    run_dir = Path(run_dir)
    device = resolve_device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext())
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    seed_everything(t.seed)

    # Data: decoded once, moved to the device once as uint8.
    data = load_cifar10(cfg.data.root, download=cfg.data.download, url=cfg.data.url)
    subset = cfg.data.train_subset
    if subset is not None and not 0 < subset <= len(data.train_images):
        raise ConfigError(f"data.train_subset={subset}; it must be in 1..{len(data.train_images)} or null")
    train_images = torch.from_numpy(data.train_images[:subset]).to(device)
    train_labels = torch.from_numpy(data.train_labels[:subset]).to(device)
    preprocess = build_preprocess(cfg.data.preprocess, train_images, cache_dir=cfg.data.root).to(device)
    train_loader = DeviceLoader(train_images, train_labels, t.batch_size, preprocess, build_augment(cfg.aug),
                                seed=t.seed, memory_format=memory_format)
    test_loader = DeviceLoader(torch.from_numpy(data.test_images).to(device),
                               torch.from_numpy(data.test_labels).to(device), t.eval_batch_size, preprocess,
                               shuffle=False, memory_format=memory_format)

    model = build_model(cfg.model, num_classes=len(data.classes)).to(device, memory_format=memory_format)
    optimizer = build_optimizer(cfg.optim, model)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    schedule = build_schedule(cfg.sched)
    mix = build_mix(cfg.aug, len(data.classes), train_loader.generator)
    criterion = build_criterion(cfg.aug.get("mix"), t.label_smoothing)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    params = count_params(model)

    budget_s = t.budget_min * 60 if t.budget_min else math.inf
    total_steps = t.epochs * len(train_loader)
    summary = {
        "status": "running", "model": cfg.model.name, "optim": cfg.optim.name,
        "aug": "+".join(filter(None, (cfg.aug.name, cfg.aug.get("mix")))),
        "params": params, "device": describe_device(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "command": " ".join(sys.argv), "versions": {"cifarbench": __version__, "torch": torch.__version__,
                                                    "python": platform.python_version()},
        "git": git_revision(), "config": OmegaConf.to_container(cfg, resolve=True),
    }
    atomic_write_json(run_dir / "summary.json", summary)  # a killed run still says what it was
    log.info("%s: %s parameters, %d training images, %d steps/epoch on %s (amp: %s)", cfg.model.name,
             f"{params:,}", len(train_images), len(train_loader), summary["device"], summary["amp"])

    rows: list[dict] = []
    step, train_seconds, stopped_by = 0, 0.0, "epochs"
    # Training loss and accuracy since the last evaluation, accumulated on the device.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, window_seconds = 0, 0.0

    def record():
        nonlocal seen, window_seconds
        test_loss, test_acc = evaluate(model, test_loader, autocast)
        rows.append({
            "epoch": round(step / len(train_loader), 4), "step": step, "train_seconds": round(train_seconds, 3),
            "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum.item() / seen if seen else math.nan,
            "train_acc": correct.item() / seen if seen else math.nan, "test_loss": test_loss, "test_acc": test_acc,
            "images_per_s": round(seen / window_seconds, 1) if seen else 0.0,
        })
        write_metrics(run_dir / "metrics.csv", rows)
        log.info("epoch %6.2f  train loss %.4f acc %5.2f%%  test loss %.4f acc %5.2f%%  %8.0f img/s  %6.1fs",
                 rows[-1]["epoch"], rows[-1]["train_loss"], 100 * rows[-1]["train_acc"], test_loss,
                 100 * test_acc, rows[-1]["images_per_s"], train_seconds)
        loss_sum.zero_()
        correct.zero_()
        seen, window_seconds = 0, 0.0

    progress_bar = None if t.progress else True  # None: tqdm shows a bar only on a terminal
    for epoch in range(1, t.epochs + 1):
        model.train()
        start = time.perf_counter()
        for images, labels in tqdm(train_loader, desc=f"epoch {epoch}/{t.epochs}", leave=False,
                                   disable=progress_bar, unit="batch"):
            elapsed = train_seconds + time.perf_counter() - start
            if elapsed >= budget_s:
                stopped_by = "budget"
                break
            lr_scale = schedule(progress(step, total_steps, elapsed, budget_s))
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * lr_scale
            targets = labels
            if mix is not None:  # soft targets; accuracy counts the dominant label
                images, targets, labels = mix(images, labels)
            with autocast:
                logits = model(images)
                loss = criterion(logits, targets)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(labels)
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the clock stops when the GPU has finished, not when the host has queued
        epoch_seconds = time.perf_counter() - start
        train_seconds += epoch_seconds
        window_seconds += epoch_seconds
        if stopped_by == "budget":
            break
        if epoch % t.eval_every == 0:
            record()
    if not rows or rows[-1]["step"] != step:  # the final evaluation always happens
        record()

    plot_curves(run_dir / "curves.png", rows, title=f"{cfg.model.name} / {cfg.optim.name} / {summary['aug']}")
    summary.update({
        "status": "completed", "stopped_by": stopped_by,
        "final_test_acc": rows[-1]["test_acc"], "final_test_loss": rows[-1]["test_loss"],
        # Chosen on the test set, so optimistic: the honest headline is final_test_acc.
        "best_test_acc": max(r["test_acc"] for r in rows),
        "best_epoch": max(rows, key=lambda r: r["test_acc"])["epoch"],
        "epochs": rows[-1]["epoch"], "steps": step, "train_seconds": round(train_seconds, 3),
    })
    atomic_write_json(run_dir / "summary.json", summary)
    log.info("done: final test accuracy %.2f%% (best %.2f%%) after %.2f epochs, %.1f s of training",
             100 * summary["final_test_acc"], 100 * summary["best_test_acc"], summary["epochs"], train_seconds)
    return summary
