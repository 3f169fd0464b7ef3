"""Benchmarks behind the numbers of the README and docs/studies.md (a script, not a test: it prints and records,
it does not judge).

Throughput, per model, in images per second of training on one device:
  (a) cifarbench: the real `train()` loop with its device loader (the last epoch's window, from metrics.csv),
  (b) floor: forward + backward + step on one fixed batch already on the device (same model, optimizer,
      precision and memory format), i.e. what the loop would reach with a free loader,
  (c) DataLoader: the common per-image `Dataset` (NumPy pad-crop-flip, normalise) + `DataLoader` loop,
  and the ratios (a)/(b) (1.0: the loader costs nothing) and (a)/(c) (the gain over the usual loop).

    python scripts/bench.py throughput --models lenet,cnn10,vgg,resnet18,resnet34
    python scripts/bench.py throughput --models lenet --train-images 500 --epochs 2 --workers 0   # seconds, on CPU
    python scripts/bench.py throughput --models all --floor-only --floor-steps 3 --batch-size 128   # the zoo, (b) only

Time to accuracy: a recipe run for N seeds after one untimed warm-up run; mean ± std of the final test
accuracy, median training seconds.

    python scripts/bench.py accuracy --recipe speedrun94 --seeds 10 [--target 0.94] [hydra overrides ...]

A reference side by side (CUDA; `pip install airbench torchvision`): our recipe and the published
airbench94 on the same data and GPU, timed the same way, and the ratio of their training times.

    python scripts/bench.py reference --recipe speedrun94 --reference airbench94 --seeds 10

Per-job overhead: N tiny jobs (LeNet, 1 epoch on 256 images, 500 test images, seeds 0..N-1) as one multirun in
a subprocess, with the default (in-process) launcher and with hydra/launcher=parallel (joblib), or those
--launchers names; per launcher the wall seconds, the CPU seconds of the sweep's processes (less sensitive to
other work on the machine), the summed train_seconds of the jobs' summary.json, and the overhead per job,
(wall − summed train_seconds) / N: everything a job costs beyond its training steps (process start and imports
shared out over the jobs, data loading, evaluation, checkpoints, figures, the sweep's leaderboard); for the
default launcher also the steady overhead per job: from one job's start to the next one's, less the job's
train_seconds, averaged over jobs 2..N-1 (what each further job of a sweep costs beyond its training, its
evaluation included; process start and the sweep's end left out). Beside it: the import time of a fresh
process (`python -c "import cifarbench.commands.cli, torch, hydra"`, interpreter start included) and of everything a
tiny run imports, the seconds Hydra takes to compose one job's config (a multirun does it twice per job), the
wall seconds of one tiny job run on its own (a process of its own, as `python -m cifarbench ...`; and its
ratio to those import times), and a cProfile of one tiny job in this process (after an unprofiled one, so like
jobs 2..N of an in-process sweep): the cifarbench functions with the most cumulative seconds.

    python scripts/bench.py overhead [--jobs 8] [--launchers basic,parallel] [hydra overrides ...]

The studies at GPU scale (docs/studies.md "Reproducing at GPU scale"): study §1's sixteen variants in this
process, one after another, each composed as `experiment=tenminute study/tenminute=<variant>` and run by
`train()` (so they share the CUDA context, cuDNN's autotuning and the CIFAR-10 arrays already on the device,
data/prepared.py), at the seeds 0..N-1 (--seeds, default 1: the recipe's seed 0); then
reported_vs_measured.md (what was measured where, the length, the data caveat, then per variant reported,
measured, gap, the length run and where the gap comes from: data through JPEG, fewer epochs, the budget),
.csv and .png (reported vs measured bars) in --out, all re-read from the runs' summary.json.

    python scripts/bench.py studies --device cuda                         # §1: 16 runs sharing 8 minutes of training
    python scripts/bench.py studies --device cuda --length budget --scale 20   # each the study's 10 min / 20
    python scripts/bench.py studies --device cuda --studies resnet34      # §3's ResNet-34, 8 min of training
    python scripts/bench.py studies --toy --device cpu                    # 2 variants, 1 epoch on 256 images

Length: `--length epochs` (default) gives each variant the epochs it trained in the study's ten minutes (its
reported epochs, else 600 s / its reported seconds per epoch, else the baseline LeNet's 150); `--length
budget` gives each the study's ten minutes / --scale. Either way the §1 runs share --total-min (default 8),
and a run that reaches its share stops there (the table says so).

Why it fits 8 minutes on an H200: before running, the plan estimates each run from its steps and FLOPs
(`estimated_seconds`): 1 ms of host time a step (launches, Python; assumed) plus its FLOPs (torch's counter:
3 forward passes a training image, 1 an evaluated one) at 50 TFLOP/s, the rate speednet reached in this loop
on the H200 (72,923 images/s × 3 × 0.236 GFLOP, README "Speed"; ResNet-18 reached 135 TFLOP/s). The study's
1,108 epochs (55 M training images; 1.8 M evaluated, as each run evaluates every tenth of its epochs and at
its end; 8.9 PFLOP) come to ~270 s: the LeNets at batch 1024 ~8-16 s each (~0.5 M images/s), LeNet-batch128
~33 s (28 k steps), LeNet-4wide ~30 s, Deep CNN (BC) ~21 s, the Fashion-MNIST CNN (1.09 GFLOP an image)
~53 s. The runs go cheapest first, and each may use the minutes left × its estimate / the estimates of the
runs left, so 8 minutes leave ~1.8× the estimate to every run, and the time a run leaves unused goes to the
runs after it. The estimate's two constants are assumptions until a GPU run measures them (the CSV's
`estimated_seconds` beside the measured seconds).

`--studies resnet34`: §3's recipe unchanged (200 epochs' schedule, batch 256) under `trainer.budget_min` =
--resnet34-min (default 8), so its schedule runs over budget progress; its row puts the accuracy reached
beside the reported 95.61% and the seconds per epoch beside the reported 40 (run it as a call of its own:
with §1 it needs 16 minutes). `--reference-run` (CUDA) first runs airbench94 on the same data and states its
accuracy above the table. Every run's config is composed and checked before the first run starts.

Several jobs on one device: N LeNet jobs (the overhead mode's tiny job; overrides make it larger) one at a
time (the default launcher) and all N at once on the same device (hydra/launcher=parallel,
`n_jobs=${jobs_per_device:N}`): each sweep's total wall seconds, aggregate images/s and the speed-up.

    CUDA_VISIBLE_DEVICES=0 python scripts/bench.py share --jobs 8 --device cuda data.train_subset=null trainer.epochs=2

Backend ops and host syncs per training step (CPU is enough): every aten op dispatched (`OpCounter`, a
TorchDispatchMode; on a GPU each is about one kernel launch) and those that wait for the device
(`.item()`, `nonzero`, boolean-mask indexing), counted over the real `train()` of a recipe and over
airbench94's extracted step (scripts/airbench94_step.py) alike: one warm-up run, then two runs of 2 and
4 epochs of --steps-per-epoch steps, the difference divided by the difference in steps (what one more
step costs, its share of per-epoch work included); compile off; the optimizers' foreach kernels as on
CUDA (PyTorch picks the per-tensor loop on a CPU); --amp auto counts bf16 autocast, CUDA's choice. The
number of ops depends neither on the batch size nor on the widths, so --ops-batch-size is small and
--widths may shrink both networks (speednet's and airbench94's).

    python scripts/bench.py ops --recipe speedrun94 --widths 8,8,8 [--steps-per-epoch 48] [hydra overrides ...]
    python scripts/bench.py ops --recipe speedrun94 --device cuda --profile --ops-batch-size 1024   # + CUDA profile

On CUDA, --profile also measures each loop's steps with torch.profiler by the same two-run difference:
host µs per step, GPU-busy µs per step (the union of its kernels' spans) and kernel launches per step.

All of them print Markdown tables and write JSON (--json, default outputs/bench/<mode>-<time>.json).
Data: `data.root` as in the configs ($CIFAR10_ROOT or ~/.cache/cifarbench); --data overrides it.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import csv
import json
import logging
import math
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from math import ceil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm import tqdm

import cifarbench
from cifarbench.data import load_cifar10
from cifarbench.core.device import describe_device, resolve_amp, resolve_device
from cifarbench.core.files import atomic_write_json, atomic_write_text, csv_text
from cifarbench.core.registry import ConfigError
from cifarbench.models import build_model, list_models
from cifarbench.optim import build_optimizer
from cifarbench.engine.build import configure_determinism
from cifarbench.engine.loop import train
from cifarbench.run.figures import new_figure, save_png
from cifarbench.run.layout import RunFolder
from cifarbench.run.studies import COLUMNS as REPORTED_COLUMNS, reported_row, to_markdown
from cifarbench.validate import validate_config

DEFAULT_MODELS = "lenet,cnn10,vgg,resnet18,resnet34"
TINY_JOB = ["model=lenet", "trainer.epochs=1", "data.train_subset=256", "data.test_subset=500", "trainer.progress=false"]
LAUNCHERS = {"basic": [], "parallel": ["hydra/launcher=parallel"]}  # Hydra overrides that pick the launcher


def config(overrides: list[str]):
    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def loop_images_per_s(cfg, run_dir: Path) -> float:
    """(a): the trainer itself; its last metrics row covers the last epoch's training steps only."""
    summary = train(cfg, run_dir)
    if summary["status"] != "completed":
        raise RuntimeError(f"{cfg.model.name}: the run ended {summary['status']}: {summary.get('error', '')}")
    with open(run_dir / "metrics.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["images_per_s"])


def step_images_per_s(cfg, batches, device: torch.device, warmup: int) -> float:
    """Train on `batches` (an iterable of (images, labels) pairs, any source); images/s after `warmup` steps."""
    t = cfg.trainer
    configure_determinism(t.deterministic, device)  # the loop's cuDNN settings (autotuning on unless deterministic)
    amp_dtype = resolve_amp(t.amp, device)
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model = build_model(cfg.model).to(device, memory_format=memory_format).train()
    optimizer = build_optimizer(cfg.optim, model)
    step_model = torch.compile(model) if t.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    seen, start = 0, None
    for step, (images, labels) in enumerate(batches):
        if step == warmup:
            synchronize(device)
            start, seen = time.perf_counter(), 0
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(step_model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        seen += len(labels)
    synchronize(device)
    if start is None:
        raise ValueError(f"too few batches to time: need more than warmup={warmup} (lower --warmup or --batch-size)")
    return seen / (time.perf_counter() - start)


class PerImageCifar(torch.utils.data.Dataset):
    """The usual pipeline, one image at a time: pad 4 with zeros, random 32×32 crop, mirror with p=½, normalise."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.mean = images.mean((0, 2, 3), keepdims=True)[0].astype(np.float32)
        self.std = images.std((0, 2, 3), keepdims=True)[0].astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        padded = np.pad(self.images[i], ((0, 0), (4, 4), (4, 4)))
        dy, dx = np.random.randint(0, 9, 2)
        image = padded[:, dy:dy + 32, dx:dx + 32]
        if np.random.rand() < 0.5:
            image = image[:, :, ::-1]
        return torch.from_numpy((image - self.mean) / self.std), int(self.labels[i])


def throughput(args) -> list[dict]:
    rows = []
    names = list_models() if args.models == "all" else args.models.split(",")
    for name in tqdm(names, desc="models", unit="model"):
        cfg = config([f"model={name}", "optim=sgd", "aug=flip_shift", f"trainer.batch_size={args.batch_size}",
                      f"trainer.epochs={args.epochs}", "trainer.eval_every=1", f"trainer.device={args.device}",
                      f"trainer.amp={args.amp}", f"trainer.channels_last={str(args.channels_last).lower()}",
                      f"trainer.compile={str(args.compile).lower()}", f"data.train_subset={args.train_images}",
                      "data.test_subset=1000", "trainer.progress=false", *args.data_override, *args.overrides])
        device = resolve_device(cfg.trainer.device)
        fixed = (torch.randn(args.batch_size, 3, 32, 32, device=device),
                 torch.randint(0, 10, (args.batch_size,), device=device))
        floor = step_images_per_s(cfg, [fixed] * (args.floor_steps + args.warmup), device, args.warmup)
        if args.floor_only:
            rows.append({"model": name, "batch_size": args.batch_size, "floor_images_per_s": round(floor, 1)})
            continue
        loop = loop_images_per_s(cfg, args.out / name)

        data = load_cifar10(cfg.data.root, download=cfg.data.download, mirrors=cfg.data.mirrors)
        dataset = PerImageCifar(data.train_images[:args.train_images], data.train_labels[:args.train_images])
        loader = torch.utils.data.DataLoader(dataset, args.batch_size, shuffle=True, drop_last=True,
                                             num_workers=args.workers, pin_memory=device.type == "cuda",
                                             persistent_workers=False)
        per_image = step_images_per_s(cfg, loader, device, min(args.warmup, len(loader) - 1))
        rows.append({"model": name, "batch_size": args.batch_size, "loop_images_per_s": round(loop, 1),
                     "floor_images_per_s": round(floor, 1), "dataloader_images_per_s": round(per_image, 1),
                     "loop_vs_floor": round(loop / floor, 3), "loop_vs_dataloader": round(loop / per_image, 2)})
    print_table(rows, ["model", "batch_size", "floor_images_per_s"] if args.floor_only else
                ["model", "batch_size", "loop_images_per_s", "floor_images_per_s", "dataloader_images_per_s",
                 "loop_vs_floor", "loop_vs_dataloader"])
    return rows


def accuracy(args) -> list[dict]:
    """The recipe over seeds 0..N-1 after `--warmup-runs` untimed runs (which absorb cuDNN autotuning and
    compilation, as a reference run's warm-up does): mean ± std of the final test accuracy (fractions)
    and the median training seconds (the clock counts data preparation on the device, the whitening
    init and every step; not evaluation or compilation)."""
    overrides = [f"experiment={args.recipe}", f"trainer.device={args.device}", "trainer.progress=false",
                 "trainer.plots=none", *args.data_override, *args.overrides]
    for run in range(args.warmup_runs):
        train(config([*overrides, f"trainer.seed={10_000 + run}"]), args.out / f"warmup{run}")
    rows = []
    for seed in tqdm(range(args.seeds), desc=args.recipe, unit="seed"):
        summary = train(config([*overrides, f"trainer.seed={seed}"]), args.out / f"seed{seed}")
        rows.append({"seed": seed, "status": summary["status"], "test_acc": summary.get("final_test_acc"),
                     "train_seconds": summary["train_seconds"], "compile_seconds": summary["compile_seconds"],
                     "epochs": summary.get("epochs")})
    aggregate = {"recipe": args.recipe, **aggregate_seeds(rows, args.target)}
    print_table(rows, ["seed", "status", "test_acc", "train_seconds", "compile_seconds", "epochs"])
    print(f"\n{args.recipe}: {100 * aggregate['mean_test_acc']:.2f}% ± {100 * aggregate['std_test_acc']:.2f} "
          f"mean test accuracy over {aggregate['seeds']} seeds, median {aggregate['median_train_seconds']:.2f} s "
          f"of training")
    return [aggregate, *rows]


def aggregate_seeds(rows: list[dict], target: float | None) -> dict:
    """Mean ± std of test_acc over the rows that have one, median train_seconds, seeds at the target."""
    accs = [r["test_acc"] for r in rows if r["test_acc"] is not None]
    if not accs:
        raise RuntimeError("no seed finished with a test accuracy: " + "; ".join(str(r.get("status")) for r in rows))
    result = {"seeds": len(accs), "mean_test_acc": round(statistics.fmean(accs), 5),
              "std_test_acc": round(statistics.stdev(accs), 5) if len(accs) > 1 else 0.0,
              "median_train_seconds": round(statistics.median(r["train_seconds"] for r in rows), 3)}
    if target is not None:
        result.update(target=target, seeds_at_target=sum(a >= target for a in accs))
    return result


def import_airbench():
    """The `airbench` module, or SystemExit saying what is missing (checked before any run starts)."""
    try:
        import airbench
    except ImportError as e:
        raise SystemExit(f"the reference needs the airbench package and torchvision ({e}); on a CUDA machine: "
                         f"pip install airbench torchvision") from None
    if not torch.cuda.is_available():
        raise SystemExit("the airbench94 reference runs on CUDA only (it loads its data onto GPU 0)")
    return airbench


def airbench94(args) -> list[dict]:
    """The published airbench94 (`pip install airbench`, which needs torchvision and a CUDA GPU) on this
    runner's copy of CIFAR-10, timed as `accuracy` times ours: one untimed warm-up, then each seed's
    `train94` call between two CUDA synchronisations (it includes airbench's whitening init and data
    preparation, and no evaluation); accuracy from airbench's own evaluation at its TTA level 2."""
    airbench = import_airbench()
    data = load_cifar10(config(args.data_override).data.root, download=False)
    work = (args.out / "airbench94").resolve()
    (work / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        # airbench's CifarLoader reads cifar10/{train,test}.pt: uint8 NHWC images, labels, classes.
        torch.save({"images": torch.from_numpy(images.transpose(0, 2, 3, 1).copy()),
                    "labels": torch.from_numpy(labels), "classes": list(data.classes)}, work / "cifar10" / f"{split}.pt")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        airbench.train94(verbose=False)
        rows = []
        for seed in tqdm(range(args.seeds), desc="airbench94", unit="seed"):
            torch.manual_seed(seed)
            torch.cuda.synchronize()
            start = time.perf_counter()
            model = airbench.train94(verbose=False)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            rows.append({"seed": seed, "status": "completed", "train_seconds": round(seconds, 3),
                         "test_acc": round(airbench.evaluate(model, test_loader, tta_level=2), 5)})
    finally:
        os.chdir(cwd)
    return rows


def reference(args) -> list[dict]:
    """Our recipe (`--recipe`) and the published reference (`--reference`) on the same GPU in one call:
    both tables, then their accuracies and the time ratio ours / reference (< 1: ours is faster)."""
    import_airbench()
    ours_aggregate, *ours = accuracy(args)
    theirs = airbench94(args)
    theirs_aggregate = {"recipe": args.reference, **aggregate_seeds(theirs, args.target)}
    print_table(theirs, ["seed", "status", "test_acc", "train_seconds"])
    ratio = ours_aggregate["median_train_seconds"] / theirs_aggregate["median_train_seconds"]
    summary = [{**a, "time_vs_reference": round(a["median_train_seconds"] / theirs_aggregate["median_train_seconds"], 3)}
               for a in (ours_aggregate, theirs_aggregate)]
    print_table(summary, ["recipe", "seeds", "mean_test_acc", "std_test_acc", "median_train_seconds",
                          "time_vs_reference"])
    print(f"\n{args.recipe} / {args.reference} training time: {ratio:.3f}")
    return [*summary, *[{"recipe": args.recipe, **r} for r in ours], *[{"recipe": args.reference, **r} for r in theirs]]


# Study §1 (docs/studies.md): every variant trained for ten minutes in the study; what those minutes bought.
STUDY_BUDGET_S = 600
BASELINE = "lenet"  # its length stands in for the variants that report neither epochs nor seconds per epoch
TOY = ["debug=quick", "trainer.epochs=1", "data.test_subset=200", "trainer.eval_batch_size=200"]
TOY_VARIANTS = ["lenet", "lenet_adam"]
JPEG_POINTS = 0.034  # what airbench94 loses on this project's copy of the data (README "Speed"), a fraction
DATA_CAVEAT = ("this project's copy of CIFAR-10 went through JPEG once (airbench94 reaches 90.6% on it against "
               "its published 94.0% on the original images: 3.4 points lost to the data alone), so every measured "
               "accuracy here starts a few points under a figure reported on the original images")
STUDY_COLUMNS = {"length": "length run", "gap_from": "gap from"}  # the table's columns beside run/studies.py's


def study_file(name: str):
    """conf/<name>.yaml of the installed configs, as written (not composed: milliseconds, not a Hydra compose)."""
    from importlib.resources import files

    return OmegaConf.load(files("cifarbench.conf") / f"{name}.yaml")


def study_variants() -> list[str]:
    """The §1 variants, one per file of conf/study/tenminute/, in name order."""
    from importlib.resources import files

    return sorted(p.name.removesuffix(".yaml") for p in (files("cifarbench.conf") / "study" / "tenminute").iterdir()
                  if p.name.endswith(".yaml"))


def study_epochs(reported, baseline) -> tuple[float, str]:
    """The epochs a §1 variant trained in the study's ten minutes, and where the number comes from: the
    epochs it reported; else 600 s / its reported seconds per epoch, rounded down; else the baseline's
    (`baseline`: the baseline LeNet's `reported`; LeNet-Adam and LeNet-AdaBound report neither and
    train the same network at the same batch size)."""
    if reported.get("epochs"):
        return float(reported.epochs), f"{reported.epochs:g} epochs (reported)"
    if reported.get("seconds_per_epoch"):
        epochs = float(STUDY_BUDGET_S // reported.seconds_per_epoch)
        return epochs, f"{epochs:g} epochs ({STUDY_BUDGET_S} s / {reported.seconds_per_epoch:g} s per epoch reported)"
    epochs = study_epochs(baseline, baseline)[0]
    return epochs, f"{epochs:g} epochs (the baseline's: same network and batch)"


def gap_sources(row: dict, epochs: float, toy: bool) -> str:
    """The `gap from` column: what differs from the study where the measured accuracy (a fraction) falls
    short of the reported one: the data (always: the JPEG copy); fewer epochs than the study's `epochs`
    and what stopped them (the budget, a toy run); at the study's epochs or more, a shortfall beyond
    the data's 3.4 points, which nothing here explains. "closed" when measured ≥ reported; "" when
    nothing was measured."""
    if row["delta_test_acc"] is None:
        return ""
    if row["delta_test_acc"] >= 0:
        return "closed"
    sources = ["data through JPEG"]
    if row["measured_epochs"] < 0.99 * epochs:
        fewer = f"epochs: {row['measured_epochs']:g} of the study's {epochs:g}"
        if toy:
            fewer += " (toy run)"
        elif "budget" in row["stopped_by"]:
            fewer += f" (budget {60 * row['budget_min']:.3g} s)"
        sources.append(fewer)
    elif -row["delta_test_acc"] > JPEG_POINTS:
        sources.append(f"{100 * (-row['delta_test_acc'] - JPEG_POINTS):.1f} points beyond the data's: not explained")
    return "; ".join(sources)


def study_jobs(args) -> list[tuple[str, float, str, list[str]]]:
    """Per §1 variant chosen (then §3's ResNet-34 when asked): its label, the epochs the study trained
    it, the length this run gives it (text) and the overrides that compose it (a §1 variant evaluates
    every tenth of the study's epochs, rounded down, and at its end). The figures are read from each
    variant's own file, where they are declared."""
    baseline = study_file(f"study/tenminute/{BASELINE}").reported
    jobs = []
    for variant in args.variants:
        epochs, length = study_epochs(study_file(f"study/tenminute/{variant}").reported, baseline)
        # about ten evaluations (and last.pt writes) a run, not one an epoch: 1,108 of them would cost minutes
        study = ["experiment=tenminute", f"study/tenminute={variant}", f"trainer.eval_every={max(1, int(epochs // 10))}"]
        if args.length == "budget":
            length = f"budget {STUDY_BUDGET_S / args.scale:g} s (the study's {STUDY_BUDGET_S} s / {args.scale:g})"
        else:
            study.append(f"trainer.epochs={epochs:g}")
        jobs.append((variant, epochs, length, study))
    if "resnet34" in args.studies:
        reported = study_file("experiment/resnet34").reported
        jobs.append(("resnet34", float(reported.epochs), f"budget {args.resnet34_min:g} min (the study: "
                     f"{reported.epochs} epochs in {reported.train_seconds:,} s)",
                     ["experiment=resnet34", f"trainer.budget_min={args.resnet34_min}"]))
    return jobs


# What the plan of the §1 runs assumes of a GPU (an H200 here), to order them and share --total-min out; to be
# measured. The host's cost of one training step (kernel launches, Python), and the FLOP rate of small networks
# in the loop: speednet's 72,923 images/s × 3 × 0.236 GFLOP (README "Speed"; ResNet-18 reached 135 TFLOP/s).
STEP_SECONDS = 1e-3
FLOP_RATE = 50e12


def forward_flops(cfg) -> float:
    """FLOPs of one forward pass of `cfg.model` per 3×32×32 image (a multiply-add is 2), counted by torch's
    FlopCounterMode on the meta device (nothing allocated, nothing computed)."""
    with torch.device("meta"):
        model = build_model(cfg.model).eval()
        images = torch.empty(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops() / 2


def estimated_seconds(cfg, epochs: float, train_images: int = 50_000, test_images: int = 10_000) -> float:
    """Seconds a §1 run of `epochs` should take on the GPU the plan assumes: its steps × STEP_SECONDS plus its
    FLOPs (3 forward passes' worth a training image, 1 an evaluated one, an evaluation every
    `trainer.eval_every` epochs) / FLOP_RATE; for the whole of CIFAR-10 (50,000 training, 10,000 test
    images) by default."""
    steps = epochs * math.ceil(train_images / cfg.trainer.batch_size)
    evaluated = test_images * math.ceil(epochs / cfg.trainer.eval_every)
    return steps * STEP_SECONDS + forward_flops(cfg) * (3 * train_images * epochs + evaluated) / FLOP_RATE


def time_share(args, remaining_s: float, estimate_s: float, estimates_left_s: float, runs_left: int) -> float:
    """Seconds the next §1 run may train, of the `remaining_s` the runs left share: with --length epochs in
    proportion to the estimates (its `estimate_s` of the `estimates_left_s` of the runs left, itself
    included); with --length budget its budget, the study's 600 s / --scale, or an equal share of what
    is left when that is less."""
    if args.length == "epochs":
        return remaining_s * estimate_s / estimates_left_s
    return min(remaining_s / runs_left, STUDY_BUDGET_S / args.scale)


def composed(label: str, overrides: list[str]):
    """The config of one run, checked as train() will check it, so a bad value stops the command before any
    run (one line, exit status 2) rather than after minutes of the others."""
    cfg = config(overrides)
    try:
        validate_config(cfg)
    except ConfigError as e:
        print(f"bench.py studies: {label}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg


def run_job(cfg, run_dir: Path) -> dict:
    """Train `cfg` in this process; the summary.json it wrote (a run that raised before writing one: a
    failed summary holding its config, so its row still shows what was reported)."""
    try:
        train(cfg, run_dir)
    except Exception as e:  # one variant failing leaves the other variants' minutes and rows
        logging.getLogger("bench").error("%s: %s", run_dir, e)
        return RunFolder(run_dir).read_summary() or {"status": "failed", "error": str(e),
                                                     "config": OmegaConf.to_container(cfg)}
    return RunFolder(run_dir).read_summary()


def studies(args) -> list[dict]:
    """`studies` mode: every run's config composed and checked first; airbench94 when --reference-run asks
    (CUDA only); then the §1 runs in this process, one after another, the cheapest first, sharing the CUDA
    context and the data already on the device, and ResNet-34; then the table and the figure from the
    runs' summary.json. The §1 runs share --total-min: with --length epochs each may use the minutes left
    × its estimated seconds / the estimated seconds of the runs left (the time a run leaves unused goes
    to the runs after it); with --length budget each gets its budget, or the minutes left / the runs left
    when that is less (every variant the same time, as in the study)."""
    overrides = [f"trainer.device={args.device}", "trainer.progress=false", "trainer.plots=none",
                 *args.data_override, *(TOY if args.toy else []), *args.overrides]
    jobs = [(label, epochs, length, [composed(label, [*study, f"trainer.seed={seed}", *overrides])
                                     for seed in range(args.seeds)])
            for label, epochs, length, study in study_jobs(args)]
    reference_row = aggregate_seeds(airbench94(args), None) if args.reference_run else None
    estimate = {label: estimated_seconds(cfgs[0], epochs) for label, epochs, _, cfgs in jobs if label != "resnet34"}
    print_table([{"variant": label, "study_epochs": f"{epochs:g}", "estimated_seconds": round(estimate[label], 1),
                  "gflop_per_image": round(forward_flops(cfgs[0]) / 1e9, 3)}
                 for label, epochs, _, cfgs in jobs if label in estimate],
                ["variant", "study_epochs", "gflop_per_image", "estimated_seconds"])
    print(f"\n§1: {len(estimate)} variant(s) x {args.seeds} seed(s), estimated "
          f"{args.seeds * sum(estimate.values()):.0f} s at the study's epochs on the assumed GPU "
          f"({STEP_SECONDS * 1e3:g} ms a step, {FLOP_RATE / 1e12:g} TFLOP/s); here {args.length}, at most "
          f"{args.total_min:g} min in all")
    started = time.perf_counter()
    deadline = started + 60 * args.total_min
    left, runs_left = args.seeds * sum(estimate.values()), args.seeds * len(estimate)  # estimated seconds, runs
    summaries = {}
    for label, _, _, cfgs in sorted(jobs, key=lambda job: (job[0] == "resnet34", estimate.get(job[0], 0))):
        summaries[label] = []
        for seed, cfg in enumerate(cfgs):
            if label in estimate:
                share = time_share(args, max(deadline - time.perf_counter(), 1.0), estimate[label], left, runs_left)
                cfg.trainer.budget_min = round(share / 60, 4)
                left, runs_left = left - estimate[label], runs_left - 1
            summaries[label].append(run_job(cfg, args.out / label / f"seed{seed}"))
        if label in estimate:  # (the §1 runs go first) their wall time: the budgets cap training seconds only
            args.s1_wall_seconds = time.perf_counter() - started
    rows = []
    for label, epochs, length, _ in jobs:  # the table in the variants' order, whatever order they ran in
        row = reported_row(label, summaries[label])
        stops = {s.get("stopped_by") for s in summaries[label] if s.get("status") == "completed"}
        row.update(length=length, stopped_by=", ".join(sorted(filter(None, stops))),
                   estimated_seconds=round(estimate[label], 1) if label in estimate else None)
        row["gap_from"] = gap_sources(row, epochs, args.toy)
        rows.append(row)
    write_study_table(rows, args, reference_row)
    return rows


def write_study_table(rows: list[dict], args, reference_row: dict | None):
    """reported_vs_measured.md (what was measured where, how long each run trained, the data caveat, then
    the table), .csv and .png in args.out; the Markdown printed too."""
    asked = (("§1", bool(args.variants)), ("§3", "resnet34" in args.studies))
    studies = " and ".join(name for name, chosen in asked if chosen)
    header = [f"# Reported vs measured: study {studies}", "",
              f"Measured on {hardware(resolve_device(args.device))}, torch {torch.__version__}, "
              f"{time.strftime('%Y-%m-%d')}: `{args.command}`; "
              f"{f'seeds 0..{args.seeds - 1}' if args.seeds > 1 else 'seed 0'}."]
    if args.variants:
        length, share = (("the epochs it trained in the study", "the minutes left × its estimated seconds / "
                          "those of the runs left, the cheapest first") if args.length == "epochs" else
                         (f"the study's ten minutes / {args.scale:g}", "its budget or, when less, the minutes "
                          "left / the runs left"))
        header += ["", f"§1: each variant ran for {length}, evaluated every tenth of the study's epochs and at its "
                   f"end; the §1 runs shared {args.total_min:g} minutes of training (each could use {share}, and stopped there); "
                   f"they took {args.s1_wall_seconds:.0f} s of wall time in all (start-up and evaluations on top of the "
                   f"training they were given)."]
    if "resnet34" in args.studies:
        header += ["", f"§3: ResNet-34's recipe unchanged (its schedule planned for 200 epochs) under a budget of "
                   f"{args.resnet34_min:g} minutes of training, the schedule following the budget's progress."]
    header += ["", f"Data caveat: {DATA_CAVEAT}."]
    if reference_row:
        header += ["", f"airbench94 on the same data in this run: {100 * reference_row['mean_test_acc']:.2f}% (mean of "
                   f"{reference_row['seeds']} seed(s); published: 94.0% on the original images)."]
    if args.toy:
        header += ["", "Toy run (--toy): one epoch on a small subset; its figures test the script, not the study."]
    table = to_markdown(rows, STUDY_COLUMNS, "\n".join(header))
    atomic_write_text(args.out / "reported_vs_measured.md", table)
    atomic_write_text(args.out / "reported_vs_measured.csv",
                      csv_text(rows, (*REPORTED_COLUMNS, "stopped_by", "estimated_seconds", *STUDY_COLUMNS)))
    plot_reported_vs_measured(rows, args.out / "reported_vs_measured.png",
                              f"reported vs measured on {describe_device(resolve_device(args.device))}")
    print("\n" + table)


def plot_reported_vs_measured(rows: list[dict], path: Path, title: str):
    """Horizontal bars, a pair per row: the reported test accuracy (grey) and the measured mean (blue,
    the seeds' std as an error bar, the gap in points beside it), in percent; a row without a
    measurement has no blue bar."""
    fig = new_figure(8, 1.2 + 0.4 * len(rows))
    axis = fig.subplots()
    y = np.arange(len(rows))
    percent = lambda key: [np.nan if r[key] is None else 100 * r[key] for r in rows]
    axis.barh(y - 0.2, percent("reported_test_acc"), 0.4, color="0.7", label="reported")
    axis.barh(y + 0.2, percent("measured_test_acc_mean"), 0.4, color="tab:blue", label="measured",
              xerr=[100 * (r["measured_test_acc_std"] or 0) for r in rows])
    for k, r in enumerate(rows):  # the gap in points at the end of the measured bar
        if r.get("delta_test_acc") is not None:
            axis.text(100 * (r["measured_test_acc_mean"] + (r["measured_test_acc_std"] or 0)) + 1.5, k + 0.2,
                      f"{100 * r['delta_test_acc']:+.1f}", va="center", fontsize=8)
    axis.set(yticks=y, yticklabels=[r["variant"] for r in rows], xlabel="test accuracy (%)", xlim=(0, 110),
             title=title)
    axis.invert_yaxis()
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    save_png(fig, path)


aten = torch.ops.aten
# Ops that make the host wait for the device (on CUDA): a value read back, or an output whose size
# depends on the data. Boolean-mask indexing (x[mask], x[mask] = y) is one too (`is_sync`).
SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
            aten.unique_consecutive.default, aten._unique2.default, aten.repeat_interleave.Tensor}
MASK_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


def is_sync(func, args) -> bool:
    """Whether aten op `func` called with `args` makes the host wait for the device on CUDA."""
    if func in SYNC_OPS:
        return True
    return func in MASK_INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                         for i in args[1] if i is not None)


class OpCounter(TorchDispatchMode):
    """While active (`with OpCounter() as counter:`), counts every aten op dispatched (`ops`; by name in
    `names`), the views among them (`views`: detach, slices, transposes, which launch no kernel) and the
    host syncs (`syncs`, see `is_sync`). An op is counted once where it is called, not the ops its kernel
    runs inside it; autograd's backward ops are counted as they run. On a CPU it cannot tell a host tensor
    from a device one: `.item()` of a host tensor counts as a sync."""

    def __init__(self):
        super().__init__()
        self.ops, self.views, self.syncs, self.names = 0, 0, 0, Counter()

    def figures(self) -> dict[str, float]:
        return {"ops": self.ops, "kernels": self.ops - self.views, "syncs": self.syncs}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.views += func.is_view
        self.names[func.overloadpacket.__name__] += 1
        self.syncs += is_sync(func, args)
        return func(*args, **(kwargs or {}))


@contextmanager
def foreach_optimizers():
    """PyTorch's optimizers with their foreach (multi-tensor) kernels, as they default to on CUDA, where
    on a CPU they would loop over the tensors one by one."""
    with ExitStack() as stack:
        for module in map(importlib.import_module, ("torch.optim.sgd", "torch.optim.adam")):
            original = module._default_to_fused_or_foreach
            stack.callback(setattr, module, "_default_to_fused_or_foreach", original)
            module._default_to_fused_or_foreach = lambda *a, **k: (False, True)
        yield


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """The time covered by the union of (start, end) `intervals` (overlapping kernels counted once)."""
    busy, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy


class CudaProfile:
    """While active (`with CudaProfile() as profile:`), torch.profiler records the host and the CUDA device;
    `figures()`: the host's wall µs, the µs the GPU was busy (the union of its kernels' and copies' spans,
    `busy_seconds`) and the kernels launched (device events). CUDA only."""

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize()
        self.profile = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        self.profile.__enter__()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.host_us = (time.perf_counter() - self.start) * 1e6
        self.profile.__exit__(*exc)

    def figures(self) -> dict[str, float]:
        from torch.autograd import DeviceType

        device = [e for e in self.profile.events() if e.device_type == DeviceType.CUDA]
        return {"host_us": self.host_us, "gpu_busy_us": busy_seconds([(e.time_range.start, e.time_range.end)
                                                                       for e in device]),
                "kernel_launches": len(device)}


def per_step(run: Callable[[float], int], measure: Callable = OpCounter, epochs: tuple[float, float] = (2, 4)) -> dict:
    """What one more step of `run(epochs) -> steps taken` costs, by `measure` (OpCounter: ops, kernels (ops
    less views) and host syncs; CudaProfile: host µs, GPU-busy µs and kernel launches): one unmeasured
    warm-up run (`run(0)`: a single step; first-use caches), then a measured run of each length; (long −
    short) / (its steps − short's), so the per-run setup cancels and per-epoch work is shared out over the
    steps. Returns {"<figure>_per_step" ..., "steps", and for OpCounter "top_ops" (the ops with most calls
    per step)}."""
    run(0)
    measured = []
    for length in epochs:
        with measure() as counter:
            steps = run(length)
        measured.append((counter, steps))
    (short, short_steps), (long, long_steps) = measured
    steps = long_steps - short_steps
    row = {f"{name}_per_step": round((value - short.figures()[name]) / steps, 3)
           for name, value in long.figures().items()}
    if isinstance(long, OpCounter):
        top = (long.names - short.names).most_common(8)
        row["top_ops"] = ", ".join(f"{name} {count / steps:.1f}" for name, count in top)
    return {**row, "steps": steps}


def ops(args) -> list[dict]:
    """Ops and syncs per step of `--recipe` (its real train()) and of airbench94's extracted step, on the
    same images (the first --steps-per-epoch × --ops-batch-size of the training set), and their ratio."""
    sys.path.insert(0, str(Path(__file__).parent))
    from airbench94_step import train94

    images = args.steps_per_epoch * args.ops_batch_size
    amp = "bf16" if args.amp == "auto" else args.amp  # (auto: what CUDA picks; off on a CPU)
    overrides = [f"experiment={args.recipe}", f"trainer.device={args.device}", f"trainer.amp={amp}",
                 "trainer.compile=false", "trainer.progress=false", "trainer.plots=none", "trainer.eval_every=1000",
                 f"trainer.batch_size={args.ops_batch_size}", "trainer.accumulate=1",
                 f"data.train_subset={images}", "data.test_subset=100", "data.val_split=0",
                 *([f"model.widths=[{','.join(map(str, args.widths))}]"] if args.widths else []),
                 *args.data_override, *args.overrides]
    runs = 0

    def ours(epochs: float) -> int:
        nonlocal runs
        runs += 1
        cfg = config([*overrides, f"trainer.epochs={epochs or 1 / args.steps_per_epoch}"])  # (0: one step)
        summary = train(cfg, args.out / f"{args.recipe}-{runs}")
        if summary["status"] != "completed":
            raise RuntimeError(f"{args.recipe}: the run ended {summary['status']}: {summary.get('error', '')}")
        return summary["steps"]

    def airbench(epochs: float) -> int:
        epochs = epochs or 1 / args.steps_per_epoch  # (0: one step)
        train94(train_images, train_labels, epochs, args.ops_batch_size, widths=args.widths)
        return ceil(epochs * args.steps_per_epoch)

    device = resolve_device(args.device)
    if args.profile and device.type != "cuda":
        raise SystemExit("bench.py ops --profile: the CUDA profile needs --device cuda")
    measures = [OpCounter, *([CudaProfile] if args.profile else [])]
    with foreach_optimizers():
        if args.airbench:  # on the same CIFAR-10 images
            data = load_cifar10(config(overrides).data.root, download=False)
            train_images = torch.from_numpy(data.train_images[:images]).to(device)
            train_labels = torch.from_numpy(data.train_labels[:images]).to(device)
        loops = [(args.recipe, ours), *([("airbench94", airbench)] if args.airbench else [])]
        rows = [{"loop": name, **{k: v for measure in measures for k, v in per_step(run, measure).items()}}
                for name, run in loops]
    print_table(rows, ["loop", "ops_per_step", "kernels_per_step", "syncs_per_step",
                       *(["host_us_per_step", "gpu_busy_us_per_step", "kernel_launches_per_step"] if args.profile
                         else []), "steps", "top_ops"])
    if not args.airbench:
        return rows
    ratio = rows[0]["ops_per_step"] / rows[1]["ops_per_step"]
    print(f"\n{args.recipe} / airbench94 ops per step: {ratio:.2f} (amp {amp}, {args.steps_per_epoch} steps/epoch, "
          f"foreach optimizers, compile off; {describe_device(device)})")
    return [*rows, {"ratio": round(ratio, 3)}]


# What a process imports before its first job, and what a tiny run imports in all: torch.optim imports
# torch._dynamo when the first optimizer is built (PyTorch's own `_disable_dynamo`), and the figures matplotlib.
PROCESS_IMPORTS = "cifarbench.commands.cli, torch, hydra"
RUN_IMPORTS = f"{PROCESS_IMPORTS}, cifarbench.engine.loop, torch._dynamo, matplotlib.backends.backend_agg, matplotlib.figure"


def import_seconds(modules: str, repeats: int) -> float:
    """Wall seconds of a fresh `python -c "import <modules>"` (interpreter start included), best of `repeats`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {modules}"], check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def sweep_overhead(launcher: str, args, launcher_overrides: list[str] | None = None) -> dict:
    """Run args.jobs tiny jobs as one `python -m cifarbench -m` with `launcher` (LAUNCHERS' overrides, or
    `launcher_overrides`); seconds of wall and of training, the overhead per job, (wall − summed
    train_seconds) / jobs, and the jobs' aggregate images/s (images trained over the sweep's wall seconds)."""
    sweep_dir = args.out / launcher
    command = [sys.executable, "-m", "cifarbench", "-m", *TINY_JOB, f"trainer.seed={','.join(map(str, range(args.jobs)))}",
               f"trainer.device={args.device}", f"hydra.sweep.dir={sweep_dir}",
               *(LAUNCHERS[launcher] if launcher_overrides is None else launcher_overrides),
               *args.data_override, *args.overrides]
    start, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True)
    wall, done = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = done.ru_utime + done.ru_stime - used.ru_utime - used.ru_stime  # its worker processes included
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"the {launcher} sweep exited with {result.returncode}: {last}")
    # (job start: Hydra writes the job's .hydra/config.yaml just before calling it), job summary; by start
    jobs = sorted([((path.parent / ".hydra" / "config.yaml").stat().st_mtime, json.loads(path.read_text()))
                   for path in sweep_dir.glob("*/summary.json")], key=lambda job: job[0])  # (never compare the dicts)
    if len(jobs) != args.jobs:
        raise SystemExit(f"the {launcher} sweep left {len(jobs)} summary.json files in {sweep_dir}, not {args.jobs}")
    summaries = [summary for _, summary in jobs]
    train_seconds = sum(s["train_seconds"] for s in summaries)
    # One job after another (the default launcher): a job's cost is the time to the next job's start; the
    # first job (its process's first torch.optim and matplotlib imports) and the last (the sweep's end) left out.
    steady = ([jobs[k + 1][0] - jobs[k][0] - jobs[k][1]["train_seconds"] for k in range(1, args.jobs - 1)]
              if launcher == "basic" and args.jobs >= 3 else [])
    images = sum(s["epochs"] * s["train_images"] for s in summaries)
    return {"launcher": launcher, "jobs": args.jobs, "completed": sum(s["status"] == "completed" for s in summaries),
            "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "train_seconds_sum": round(train_seconds, 2),
            "aggregate_images_per_s": round(images / wall, 1),
            "overhead_per_job_seconds": round((wall - train_seconds) / args.jobs, 3),
            "steady_overhead_per_job_seconds": round(statistics.fmean(steady), 3) if steady else None}


def profile_job(args, top: int = 10) -> list[dict]:
    """cProfile one tiny job in this process, after an unprofiled one (imports and caches warm, as for jobs
    2..N of an in-process sweep); the `top` cifarbench functions by cumulative seconds (the job's total first)."""
    cfg = config([*TINY_JOB, f"trainer.device={args.device}", *args.data_override, *args.overrides])
    train(cfg, args.out / "profile-warmup")
    profiler = cProfile.Profile()
    profiler.runcall(train, cfg, args.out / "profile")
    package = Path(cifarbench.__file__).parent
    entries = [{"function": f"{Path(file).relative_to(package.parent)}:{name}", "calls": calls,
                "cumulative_seconds": round(cumulative, 3)}
               for (file, _, name), (_, calls, _, cumulative, _) in pstats.Stats(profiler).stats.items()
               if file.startswith(str(package)) and not name.startswith("<")]  # not lambdas, comprehensions
    return sorted(entries, key=lambda e: -e["cumulative_seconds"])[:top]


def single_run_seconds(args) -> float:
    """Wall seconds of one tiny job as a single run (`python -m cifarbench`, its own process, figures and all)."""
    command = [sys.executable, "-m", "cifarbench", *TINY_JOB, f"trainer.device={args.device}",
               f"hydra.run.dir={args.out / 'single'}", *args.data_override, *args.overrides]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def compose_seconds(args, repeats: int) -> float:
    """Median wall seconds of composing one tiny job's config with Hydra's own part, as a multirun does
    twice per job (its sweeper composes every job up front to check its overrides, its launcher again to run it)."""
    times = []
    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        for seed in range(repeats):
            start = time.perf_counter()
            compose("config", overrides=[*TINY_JOB, f"trainer.seed={seed}", *args.data_override, *args.overrides],
                    return_hydra_config=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead(args) -> list[dict]:
    """A row per sweep of --launchers (each with the import seconds, Hydra's seconds to compose a job and a
    single run's seconds), then the profiled job's top functions."""
    startup, run_imports = import_seconds(PROCESS_IMPORTS, args.repeats), import_seconds(RUN_IMPORTS, args.repeats)
    composing, single = compose_seconds(args, args.repeats), single_run_seconds(args)
    rows = [{**sweep_overhead(launcher, args), "import_seconds": round(startup, 2),
             "run_import_seconds": round(run_imports, 2), "compose_seconds": round(composing, 3),
             "single_run_seconds": round(single, 2)} for launcher in tqdm(args.launchers, desc="sweeps")]
    print_table(rows, ["launcher", "jobs", "completed", "wall_seconds", "cpu_seconds", "train_seconds_sum",
                       "overhead_per_job_seconds",
                       "steady_overhead_per_job_seconds"])
    print(f"\nimports of a fresh process ({PROCESS_IMPORTS}; interpreter start included): {startup:.2f} s")
    print(f"everything a tiny run imports (also torch._dynamo, which torch.optim imports, and matplotlib): "
          f"{run_imports:.2f} s")
    print(f"Hydra composing one job's config (twice per job in a multirun): {composing:.3f} s")
    print(f"one tiny job as a single run: {single:.2f} s ({single / run_imports:.1f} × what it imports, "
          f"{single / startup:.1f} × a fresh process's imports)")
    profile = profile_job(args)
    print_table(profile, ["function", "calls", "cumulative_seconds"])
    return rows + profile


def share(args) -> list[dict]:
    """args.jobs LeNet jobs (TINY_JOB and the overrides, seeds 0..N-1) on one device, one at a time (the default
    launcher, in one process) and all at once (hydra/launcher=parallel with n_jobs=${jobs_per_device:N}; run
    it with one GPU visible, CUDA_VISIBLE_DEVICES=0): each sweep's total wall seconds and aggregate images/s,
    and the second's speed-up over the first."""
    rows = [sweep_overhead("basic", args),
            sweep_overhead("shared", args, ["hydra/launcher=parallel",
                                            f"hydra.launcher.n_jobs=${{jobs_per_device:{args.jobs}}}"])]
    for row in rows:
        row["speedup"] = round(rows[0]["wall_seconds"] / row["wall_seconds"], 2)
    print_table(rows, ["launcher", "jobs", "completed", "wall_seconds", "train_seconds_sum", "aggregate_images_per_s",
                       "speedup"])
    return rows


def print_table(rows: list[dict], columns: list[str]):
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join("—" if row[c] is None else str(row[c]) for c in columns) + " |")


def hardware(device: torch.device) -> str:
    description = describe_device(device)
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        description += f"; host CPU {cpu} ({os.cpu_count()} cores)"
    except (OSError, StopIteration):
        pass
    return description


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["throughput", "accuracy", "reference", "overhead", "studies", "share", "ops"])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run, e.g. trainer.amp=off")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data", help="dataset folder (else data.root of the configs)")
    parser.add_argument("--json", type=Path, help="where to write the results (default outputs/bench/...)")
    parser.add_argument("--out", type=Path, help="run folders (default outputs/bench/<mode>-<time>/)")
    throughput_args = parser.add_argument_group("throughput")
    throughput_args.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated, or all")
    throughput_args.add_argument("--floor-only", action="store_true", help="measure (b) only (the whole zoo in minutes)")
    throughput_args.add_argument("--batch-size", type=int, default=512)
    throughput_args.add_argument("--train-images", type=int, default=50_000)
    throughput_args.add_argument("--epochs", type=int, default=2, help="(a) reports the last one")
    throughput_args.add_argument("--floor-steps", type=int, default=50)
    throughput_args.add_argument("--warmup", type=int, default=5, help="steps not timed in (b) and (c)")
    throughput_args.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                                 help="DataLoader workers for (c)")
    throughput_args.add_argument("--amp", default="auto")
    throughput_args.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    throughput_args.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    accuracy_args = parser.add_argument_group("accuracy")
    accuracy_args.add_argument("--recipe", default="speedrun94", help="an experiment config")
    accuracy_args.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 10; studies: 1, the recipes' seed 0)")
    accuracy_args.add_argument("--target", type=float, help="count the seeds at or above this accuracy")
    accuracy_args.add_argument("--warmup-runs", type=int, default=1, help="untimed runs before the seeds")
    accuracy_args.add_argument("--reference", default="airbench94", choices=["airbench94"],
                               help="reference mode: the published recipe run beside --recipe")
    ops_args = parser.add_argument_group("ops (also --recipe, --amp)")
    ops_args.add_argument("--steps-per-epoch", type=int, default=48,
                          help="steps per epoch of the counted runs (48: airbench94's at batch 1024)")
    ops_args.add_argument("--ops-batch-size", type=int, default=4,
                          help="images per step of the counted runs (the op count does not depend on it)")
    ops_args.add_argument("--profile", action="store_true",
                          help="CUDA: also profile each loop's steps (torch.profiler): host µs, GPU-busy µs and "
                               "kernel launches per step, by the same two-run difference")
    ops_args.add_argument("--airbench", action=argparse.BooleanOptionalAction, default=True,
                          help="count airbench94's step too (--no-airbench: the recipe's alone)")
    ops_args.add_argument("--widths", type=lambda text: tuple(map(int, text.split(","))),
                          help="the block widths of both networks, e.g. 8,8,8: the op count does not depend on "
                               "them, a CPU counts sooner (for recipes whose model has a widths field)")
    overhead_args = parser.add_argument_group("overhead")
    overhead_args.add_argument("--jobs", type=int, default=8,
                               help="tiny jobs per sweep (default 8; the steady overhead needs at least 3); "
                                    "share: the jobs run one at a time, then all at once")
    overhead_args.add_argument("--launchers", type=lambda names: names.split(","), default=list(LAUNCHERS),
                               help=f"comma-separated, of {', '.join(LAUNCHERS)} (default: both)")
    overhead_args.add_argument("--repeats", type=int, default=5,
                               help="how often to time the imports (the best counts) and composing a config "
                                    "(the median counts); default 5")
    studies_args = parser.add_argument_group("studies")
    studies_args.add_argument("--studies", type=lambda names: names.split(","), default=["tenminute"],
                              help="comma-separated, of tenminute (§1's variants), resnet34 (§3 under a budget)")
    studies_args.add_argument("--variants", type=lambda names: names.split(","),
                              help="§1 variants, comma-separated (default: all sixteen; --toy: lenet,lenet_adam)")
    studies_args.add_argument("--length", choices=["epochs", "budget"], default="epochs",
                              help="epochs: the epochs each variant trained in the study (default); budget: the "
                                   "study's ten minutes divided by --scale")
    studies_args.add_argument("--scale", type=float, default=20, help="--length budget: 10 min / this (default 20)")
    studies_args.add_argument("--total-min", type=float, default=8,
                              help="minutes of training the §1 runs share (default 8): with --length epochs each may "
                                   "use the minutes left × its estimate / the estimates of the runs left; with --length "
                                   "budget its budget or, when less, the minutes left / the runs left (start-up and "
                                   "evaluations come on top: the table gives the wall time)")
    studies_args.add_argument("--resnet34-min", type=float, default=8, help="ResNet-34's budget in minutes (default 8)")
    studies_args.add_argument("--reference-run", action="store_true",
                              help="also run --reference (airbench94, CUDA) on the same data, its accuracy above "
                                   "the table")
    studies_args.add_argument("--toy", action="store_true",
                              help="one epoch on 256 images per run, variants lenet,lenet_adam: a check of the script")
    args = parser.parse_intermixed_args(argv)
    if unknown := sorted(set(args.launchers) - set(LAUNCHERS)):
        parser.error(f"--launchers: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(LAUNCHERS)}")
    if args.jobs < 1 or args.repeats < 1:
        parser.error(f"--jobs {args.jobs} --repeats {args.repeats}: both must be at least 1")
    if unknown := sorted(set(args.studies) - {"tenminute", "resnet34"}):
        parser.error(f"--studies: unknown {', '.join(map(repr, unknown))}; choose from tenminute, resnet34")
    if "tenminute" not in args.studies:
        args.variants = []
    elif args.variants is None:
        args.variants = TOY_VARIANTS if args.toy else study_variants()
    if unknown := sorted(set(args.variants) - set(study_variants())):
        parser.error(f"--variants: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(study_variants())}")
    if args.seeds is None:
        args.seeds = 1 if args.mode == "studies" else 10
    if args.seeds < 1 or args.scale <= 0 or args.total_min <= 0 or args.resnet34_min <= 0:
        parser.error(f"--seeds {args.seeds} --scale {args.scale:g} --total-min {args.total_min:g} --resnet34-min "
                     f"{args.resnet34_min:g}: --seeds must be at least 1, the others above 0")
    args.command = " ".join(["bench.py", *(sys.argv[1:] if argv is None else argv)])

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    args.out = args.out or Path("outputs/bench") / f"{args.mode}-{stamp}"
    args.json = args.json or args.out.with_suffix(".json")
    args.data_override = [f"data.root={args.data}"] if args.data else []
    device = resolve_device(args.device)
    rows = {"throughput": throughput, "accuracy": accuracy, "reference": reference, "overhead": overhead,
            "studies": studies, "share": share, "ops": ops}[args.mode](args)
    atomic_write_json(args.json, {"mode": args.mode, "command": args.command,
                                  "hardware": hardware(device), "torch": torch.__version__,
                                  "python": platform.python_version(), "rows": rows})
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
