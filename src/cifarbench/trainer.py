"""The training loop: one loop for every model, optimizer, augmentation, device and precision.

Read top to bottom: checks → device and precision → data on the device → model, optimizer, schedule
(and the options a recipe turns on) → resume → the loop (set lr, forward, backward, step, accumulate
on the device) → evaluation and checkpoints → files. Everything is decided before the loop; the
step does no host–device synchronisation (a divergence check reads one flag every 50 steps).
"""
from __future__ import annotations

import contextlib
import logging
import math
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from cifarbench import __version__
from cifarbench.aug import build_augment, build_mix
from cifarbench.checkpoint import (find_resumable, load_checkpoint, plain_config, restore_rng, rng_state,
                                   save_checkpoint)
from cifarbench.data import DeviceLoader, build_preprocess, load_cifar10
from cifarbench.data.preprocess import preprocess_state
from cifarbench.device import describe_device, resolve_amp, resolve_device
from cifarbench.diagnostics import write_diagnostics
from cifarbench.files import atomic_write_json
from cifarbench.models import build_model, count_params
from cifarbench.optim import build_optimizer
from cifarbench.registry import ConfigError
from cifarbench.runlog import plot_curves, write_metrics
from cifarbench.sched import build_schedule, progress
from cifarbench.speedups import Lookahead, build_ema, tta_views, whiten_first_conv
from cifarbench.validate import validate_config

log = logging.getLogger(__name__)
DIVERGENCE_CHECK_EVERY = 50  # steps; each check is one host–device sync


def seed_everything(seed: int, deterministic: bool):
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic  # autotuned kernels are faster but not reproducible


def build_criterion(mix: str | None, label_smoothing: float):
    """Cross-entropy on hard or soft (mixed) targets; SPEC's BC-learning trains with KL divergence."""
    if mix == "bc":
        return lambda logits, targets: F.kl_div(F.log_softmax(logits.float(), 1), targets, reduction="batchmean")
    return lambda logits, targets: F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DeviceLoader, autocast, tta: str = "none"
             ) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and the predicted classes over the loader (logits averaged over
    the test-time views); one host sync at the end."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.images.device)
    predictions = []
    for images, labels in loader:
        with autocast:
            logits = torch.stack([model(view).float() for view in tta_views(images, tta)]).mean(0)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        predictions.append(logits.argmax(1))
    predictions = torch.cat(predictions)
    n = len(loader.images)
    return loss_sum.item() / n, (predictions == loader.labels).sum().item() / n, predictions.cpu()


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C sets a flag that the loop reads after each step, so the run can save and exit cleanly;
    a second Ctrl-C interrupts at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        log.warning("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort now)")
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train `cfg.model` per the config; write metrics.csv, curves.png, confusion.png, samples.png,
    checkpoints/ and summary.json into `run_dir`; return the summary."""
    validate_config(cfg)
    t = cfg.trainer
    run_dir = Path(run_dir)
    device = resolve_device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    seed_everything(t.seed, t.deterministic)
    summary = {
        "status": "running", "model": cfg.model.name, "optim": cfg.optim.name,
        "aug": "+".join(filter(None, (cfg.aug.name, cfg.aug.get("mix")))), "command": " ".join(sys.argv),
        "versions": {"cifarbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git": git_revision(), "config": plain_config(cfg),
    }
    atomic_write_json(run_dir / "summary.json", summary)  # fails fast on an unwritable folder; a killed run says what it was

    # Data: decoded once, moved to the device once as uint8.
    data = load_cifar10(cfg.data.root, download=cfg.data.download, url=cfg.data.url)
    subset = cfg.data.train_subset
    if subset is not None and subset > len(data.train_images):
        raise ConfigError(f"data.train_subset={subset}; this dataset has {len(data.train_images)} training images")
    train_images = torch.from_numpy(data.train_images[:subset]).to(device)
    train_labels = torch.from_numpy(data.train_labels[:subset]).to(device)
    preprocess = build_preprocess(cfg.data.preprocess, train_images, cache_dir=cfg.data.root).to(device)
    train_loader = DeviceLoader(train_images, train_labels, t.batch_size, preprocess, build_augment(cfg.aug),
                                seed=t.seed, memory_format=memory_format,
                                alternating_flip=cfg.aug.get("flip") == "alternating")
    test_images, test_labels = data.test_images[:cfg.data.test_subset], data.test_labels[:cfg.data.test_subset]
    test_loader = DeviceLoader(torch.from_numpy(test_images).to(device), torch.from_numpy(test_labels).to(device),
                               t.eval_batch_size, preprocess, shuffle=False, memory_format=memory_format)

    # Model, optimizer, schedule, and the options a recipe may turn on.
    model = build_model(cfg.model, num_classes=len(data.classes)).to(device, memory_format=memory_format)
    if t.whiten_init:
        whiten_first_conv(model, preprocess(train_images[:5000]))
    optimizer = build_optimizer(cfg.optim, model)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    schedule = build_schedule(cfg.sched)
    mix = build_mix(cfg.aug, len(data.classes), train_loader.generator)
    criterion = build_criterion(cfg.aug.get("mix"), t.label_smoothing)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = build_ema(model, t.ema)
    lookahead = Lookahead(model, t.lookahead) if t.lookahead else None
    step_model = torch.compile(model) if t.compile else model
    eval_model = ema.module if ema is not None else step_model
    params = count_params(model)
    summary.update(params=params, device=describe_device(device),
                   amp=str(amp_dtype).removeprefix("torch.") if amp_dtype else "off")

    def checkpoint_state(epoch: int) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "lookahead": lookahead.state_dict() if lookahead is not None else None,
                "epoch": epoch, "step": step, "train_seconds": train_seconds, "rows": rows,
                "rng": rng_state(train_loader.generator), "config": summary["config"],
                "preprocess": preprocess_state(preprocess), "classes": list(data.classes)}

    rows: list[dict] = []
    step, start_epoch, train_seconds, compile_seconds = 0, 0, 0.0, 0.0
    resume_from = find_resumable(run_dir, summary["config"]) if t.resume == "auto" else t.resume
    if resume_from:
        state = load_checkpoint(resume_from, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state["ema"]:
            ema.load_state_dict(state["ema"])
        if lookahead is not None and state["lookahead"]:
            lookahead.load_state_dict(state["lookahead"])
        restore_rng(state["rng"], train_loader.generator)
        rows, step, start_epoch, train_seconds = state["rows"], state["step"], state["epoch"], state["train_seconds"]
        train_loader.epoch = start_epoch
        log.info("resumed from %s at epoch %d (step %d, %.1f s of training)", resume_from, start_epoch, step,
                 train_seconds)
    elif t.resume == "auto":
        log.info("trainer.resume=auto: no unfinished run with this config; starting afresh")

    budget_s = t.budget_min * 60 if t.budget_min else math.inf
    total_steps = t.epochs * len(train_loader)
    status, stopped_by, best_acc = "completed", "epochs", max((r["test_acc"] for r in rows), default=-1.0)
    log.info("%s: %s parameters, %d training images, %d steps/epoch on %s (amp: %s)", cfg.model.name,
             f"{params:,}", len(train_images), len(train_loader), summary["device"], summary["amp"])

    # Training loss and accuracy since the last evaluation, accumulated on the device.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    # The losses of the current window of DIVERGENCE_CHECK_EVERY steps, read once per window.
    recent_losses = torch.zeros(DIVERGENCE_CHECK_EVERY, device=device)
    seen, window_seconds, recent_lrs = 0, 0.0, {}
    final_predictions = None

    def record(epoch: int):
        """Evaluate, log a metrics row, and checkpoint (last.pt always, best.pt at a new best)."""
        nonlocal seen, window_seconds, best_acc, final_predictions
        test_loss, test_acc, final_predictions = evaluate(eval_model, test_loader, autocast, t.tta)
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
        state = checkpoint_state(epoch)
        save_checkpoint(run_dir / "checkpoints" / "last.pt", state)
        if test_acc > best_acc:
            best_acc = test_acc
            save_checkpoint(run_dir / "checkpoints" / "best.pt", state)
        loss_sum.zero_()
        correct.zero_()
        seen, window_seconds = 0, 0.0

    def diverged() -> str | None:
        """One sync: the first step of this window whose loss was not finite, with its learning rate."""
        bad = (~torch.isfinite(recent_losses)).nonzero()
        if not len(bad):
            return None
        bad_step = (step - 1) // DIVERGENCE_CHECK_EVERY * DIVERGENCE_CHECK_EVERY + bad[0].item() + 1
        return f"loss became non-finite at step {bad_step} (lr {recent_lrs.get(bad_step, math.nan):.3g})"

    progress_bar = None if t.progress else True  # None: tqdm shows a bar only on a terminal
    epoch = start_epoch
    with deferred_interrupt() as interrupted:
        for epoch in range(start_epoch + 1, t.epochs + 1):
            step_model.train()
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
                    logits = step_model(images)
                    loss = criterion(logits, targets)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if ema is not None:
                    ema.update_parameters(model)
                if lookahead is not None:
                    lookahead.after_step(step)
                if t.compile and step == 1:  # the first step compiled the model: not training time
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    compile_seconds = time.perf_counter() - start
                    start = time.perf_counter()
                seen += len(labels)
                loss_sum += loss.detach().float() * len(labels)
                correct += (logits.argmax(1) == labels).sum()
                recent_losses[(step - 1) % DIVERGENCE_CHECK_EVERY] = loss.detach()
                recent_lrs[step] = optimizer.param_groups[0]["lr"]
                if step % DIVERGENCE_CHECK_EVERY == 0:
                    if diverged():
                        break
                    recent_losses.zero_()
                    recent_lrs.clear()
                if interrupted.is_set():
                    break
            if device.type == "cuda":
                torch.cuda.synchronize()  # the clock stops when the GPU has finished, not when the host has queued
            epoch_seconds = time.perf_counter() - start
            train_seconds += epoch_seconds
            window_seconds += epoch_seconds
            if diverged() or interrupted.is_set() or stopped_by == "budget":
                break
            if epoch % t.eval_every == 0:
                record(epoch)

    reason = diverged()
    if reason:  # keep the last good checkpoint; record what happened
        status = "diverged"
        log.error("diverged: %s; the last good checkpoint is %s", reason, run_dir / "checkpoints" / "last.pt")
        summary["error"] = reason
    elif interrupted.is_set():
        status = "interrupted"
        record(epoch - 1)  # evaluation and checkpoint at this step; resume restarts the unfinished epoch
    elif not rows or rows[-1]["step"] != step:  # the final evaluation always happens
        record(epoch)

    if rows:
        plot_curves(run_dir / "curves.png", rows, title=f"{cfg.model.name} / {cfg.optim.name} / {summary['aug']}")
        summary.update({
            "final_test_acc": rows[-1]["test_acc"], "final_test_loss": rows[-1]["test_loss"],
            # Chosen on the test set, so optimistic: the honest headline is final_test_acc.
            "best_test_acc": max(r["test_acc"] for r in rows),
            "best_epoch": max(rows, key=lambda r: r["test_acc"])["epoch"], "epochs": rows[-1]["epoch"],
        })
    if final_predictions is not None and status != "diverged":
        summary["per_class_acc"] = write_diagnostics(run_dir, test_images, test_labels, final_predictions.numpy(),
                                                     data.classes)
    summary.update(status=status, stopped_by=stopped_by if status == "completed" else status, steps=step,
                   train_seconds=round(train_seconds, 3), compile_seconds=round(compile_seconds, 3))
    atomic_write_json(run_dir / "summary.json", summary)
    if rows:
        log.info("%s: final test accuracy %.2f%% (best %.2f%%) after %.2f epochs, %.1f s of training",
                 status, 100 * summary["final_test_acc"], 100 * summary["best_test_acc"], summary["epochs"],
                 train_seconds)
    return summary
