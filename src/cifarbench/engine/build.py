"""Everything a run decides before its loop: the device, precision and seeds (`set_up`), the network
and its whitening init (`build_network`), and the loaders, optimizer, averaging, compiled forward and
step (`build_training`); a Training is written to and restored from a Checkpoint here."""
from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from cifarbench.aug import build_augmentation
from cifarbench.aug.tta import tta_views
from cifarbench.core.clock import RunState
from cifarbench.core.config_diff import plain_config
from cifarbench.core.device import CUDA_GRAPH_MODES, resolve_amp
from cifarbench.core.distributed import World, rank_seed
from cifarbench.data import DeviceLoader
from cifarbench.data.prepared import PreparedData
from cifarbench.engine.averaging import EMA, Lookahead
from cifarbench.engine.precision import MasterWeights
from cifarbench.engine.resume import checkpoint_to_resume
from cifarbench.engine.step import GradientClipping, Plan, TrainStep, micro_batches
from cifarbench.models import build_model
from cifarbench.models.init import reconcile_norm_counters, whiten_first_conv
from cifarbench.optim import build_optimizer
from cifarbench.run.checkpoint import Checkpoint, restore_rng, rng_state
from cifarbench.sched import build_schedule
from cifarbench.validate import check_shares, validate_config

log = logging.getLogger(__name__)
WHITENING_IMAGES = 5000  # training images the whitening init fits its patches on (airbench94's number)


def configure_determinism(deterministic: bool, device: torch.device):
    """Reproducible kernels or fast ones. Only touches the global switch when it must change (the
    first call costs seconds). On CUDA, cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before its first use."""
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic  # autotuned kernels are faster but not reproducible


@dataclass
class Setup:
    """A run's decisions before any data loads: its processes, run folder (rank 0's on every rank),
    resolved config, device, AMP dtype (None: off) and autocast context (a no-op under
    trainer.precision=half, whose network computes in that dtype itself), memory format, and the
    checkpoint it resumes from (path and contents; None to start afresh)."""
    world: World
    run_dir: Path
    config: dict
    device: torch.device
    amp_dtype: torch.dtype | None
    autocast: contextlib.AbstractContextManager
    memory_format: torch.memory_format
    resume_from: str | None
    checkpoint: Checkpoint | None


def set_up(cfg: DictConfig, run_dir: str | Path) -> Setup:
    """Check the config (ConfigError before any data loads), find the checkpoint to resume from (before
    this run writes anything), choose device and precision, seed every rank alike (the same initial
    weights). Raises ConfigError or CheckpointError."""
    world = World.current()
    validate_config(cfg, world.size)
    t = cfg.trainer
    run_dir = Path(world.broadcast(str(run_dir)))  # rank 0's folder, which its messages name on every rank
    config = plain_config(cfg)
    outputs = Path(cfg.paths.output_dir) if "paths" in cfg else None
    resume_from, checkpoint = checkpoint_to_resume(t.resume, run_dir, config, outputs, world)
    device = world.device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype and t.precision == "autocast"
                else contextlib.nullcontext())  # (a half network needs no casts)
    configure_determinism(t.deterministic, device)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    return Setup(world, run_dir, config, device, amp_dtype, autocast,
                 torch.channels_last if t.channels_last else torch.contiguous_format, resume_from, checkpoint)


def build_network(cfg: DictConfig, setup: Setup, data: PreparedData) -> tuple[torch.nn.Module, torch.nn.Conv2d | None]:
    """The model on the device in its memory format (SyncBatchNorm if asked), and its first conv when
    `trainer.whiten_init` initialised it to whiten the training patches (else None)."""
    t = cfg.trainer
    model = build_model(cfg.model, len(data.classes), data.train_images.shape[1:])
    model = model.to(setup.device, memory_format=setup.memory_format)
    if t.sync_bn:
        model = setup.world.sync_batchnorm(model, setup.device)
        reconcile_norm_counters(model)  # (new modules: checkpoints with or without BN step counters load)
    first_conv = (whiten_first_conv(model, data.preprocess(data.train_images[:WHITENING_IMAGES]))
                  if t.whiten_init else None)
    return model, first_conv


@dataclass
class Training:
    """Everything the loop works with, built before it starts. `train_forward` is `model` or its
    torch.compile wrapper (same parameters), around DDP's under several processes; `eval_model` is what
    evaluation reads (the EMA's weights when there is one, never DDP's wrapper); under
    trainer.precision=half `model` holds the fp32 master weights and `train_forward` wraps its half copy
    (`master`), which `eval_model` is too unless there is an EMA (fp32 weights, evaluated in fp32);
    `val_loader` holds the validation split (None without one); the evaluation loaders hold this rank's
    share of their images."""
    model: torch.nn.Module
    train_forward: torch.nn.Module
    eval_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_step: TrainStep
    train_loader: DeviceLoader
    test_loader: DeviceLoader
    val_loader: DeviceLoader | None
    ema: EMA | None
    lookahead: Lookahead | None
    world: World
    graphs_after_warm_up: int | None = None  # compiled_graphs() once warm_up_compiled is done (None: no compile)
    master: MasterWeights | None = None  # trainer.precision=half: `model` is the fp32 master; its half copy trains

    def checkpoint(self, state: RunState, config: dict, preprocess: dict, classes: list[str]) -> Checkpoint:
        """Everything a resume needs. The weights (of the plain module), optimizer and data position are
        the same on every rank; `ranks` holds each rank's random states (global RNGs, augmentation draws).
        Under DDP this gathers from every rank: all call it, rank 0's recorder saves it. (`augment_epoch`:
        the augmentation generator's state at the epoch's start, for aug.per_epoch.)"""
        ranks = self.world.gather_objects({"rng": rng_state(), "augment": self.train_loader.generator.get_state(),
                                           "augment_epoch": self.train_loader.epoch_start})
        return Checkpoint(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                          scaler=self.scaler.state_dict(), ema=self.ema.state_dict() if self.ema else None,
                          lookahead=self.lookahead.state_dict() if self.lookahead else None,
                          loader=self.train_loader.state_dict(), window=self.train_step.state_dict(), state=vars(state),
                          ranks=ranks, config=config, preprocess=preprocess, classes=classes)

    def restore(self, checkpoint: Checkpoint, seed: int) -> RunState:
        """Load a checkpoint (tensors on the CPU: each piece moves to where it lives); returns its RunState.
        Written by as many processes as now, each rank continues its own random streams; written by
        another number, the weights and the data order continue exactly and each rank's random draws
        start afresh from `seed`, its rank and the step."""
        state = RunState(**checkpoint.state)
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)  # moves the state to the parameters' device
        load_scaler(self.scaler, checkpoint.scaler)
        if self.ema is not None and checkpoint.ema:
            self.ema.load_state_dict(checkpoint.ema)
        if self.lookahead is not None and checkpoint.lookahead:
            self.lookahead.load_state_dict(checkpoint.lookahead)
        self.train_loader.load_state_dict(checkpoint.loader)
        self.train_step.load_state_dict(checkpoint.window)
        if self.master is not None:
            self.master.weights_to_half()
        ranks, world = checkpoint.ranks, self.world
        if len(ranks) == world.size:
            restore_rng(ranks[world.rank]["rng"])
            self.train_loader.generator.set_state(ranks[world.rank]["augment"].cpu())
            epoch_start = ranks[world.rank].get("augment_epoch")  # (aug.per_epoch's; absent before it)
            self.train_loader.epoch_start = None if epoch_start is None else epoch_start.cpu()
        else:
            if world.main:
                log.warning("resuming on %d process(es) a checkpoint written by %d: the weights and the data order "
                            "continue exactly, the random draws (augmentation, dropout) start afresh", world.size,
                            len(ranks))
            torch.manual_seed(rank_seed(seed, world.rank, state.step))
            self.train_loader.generator.manual_seed(rank_seed(seed, world.rank, state.step))
        return state


def load_scaler(scaler: torch.amp.GradScaler, state: dict):
    """Put a checkpoint's GradScaler state back, across any precision change a resume allows: a
    checkpoint written without fp16 (bf16 or off: a disabled scaler saves an empty state) resumed
    under fp16 starts its scaler afresh (scale 2^16, as torch.amp.GradScaler's default) where
    load_state_dict would raise "The source state dict is empty"; a disabled scaler ignores any state."""
    if state:
        scaler.load_state_dict(state)
    elif scaler.is_enabled():
        log.info("the checkpoint was written without fp16 loss scaling: the GradScaler starts afresh")


def compiled_graphs() -> int:
    """How many graphs torch.compile (TorchDynamo) has compiled in this process so far: every first
    compile and every recompile (a new shape, a failed guard) adds one (torch._dynamo's
    `counters["stats"]["unique_graphs"]`)."""
    from torch._dynamo.utils import counters  # (imported only when compiling)

    return counters["stats"]["unique_graphs"]


def compile_warm_up_runs(mode: str, device: torch.device) -> int:
    """How often `warm_up_compiled` runs each graph under torch.compile `mode` (trainer.compile_mode) on
    `device`: 3 under a CUDA-graph mode on CUDA (core.device.CUDA_GRAPH_MODES), as CUDA graph trees warm
    up on a graph's first run, record it on the second and replay it from the third; else 1 (the first
    run compiles, and max-autotune's benchmarking, elsewhere, happens then)."""
    return 3 if device.type == "cuda" and mode in CUDA_GRAPH_MODES else 1


def warm_up_compiled(training: Training, autocast, tta: str, mode: str = "default"):
    """Compile every graph the run will use before it starts (each training batch size forward and
    backward, each evaluation batch size and TTA view under no_grad), so nothing recompiles inside the
    timed loop; each runs `compile_warm_up_runs` times (3 under a CUDA-graph mode on CUDA, as CUDA graph
    trees record a graph on its second run and replay it from the third; else 1). Parameters a step may
    freeze after their epochs are frozen for a second pass (under trainer.precision=half in the half copy
    too, which computes). Afterwards `training.graphs_after_warm_up` holds `compiled_graphs()`, so the
    run can record how many were compiled inside the loop (summary.json `recompiles_in_loop`, 0 when
    the warm-up covered every shape). The model's weights, statistics and the RNG are left as they
    were: no step is taken."""
    runs = compile_warm_up_runs(mode, next(training.model.parameters()).device)
    saved = {name: tensor.clone() for name, tensor in training.model.state_dict().items()}
    rng = rng_state()

    def inputs(loader: DeviceLoader, size: int) -> torch.Tensor:
        return loader.preprocess(loader.images[:size]).contiguous(memory_format=loader.memory_format)

    train_loader = training.train_loader
    # The parameters a step may freeze after their epochs (one process: step.freeze_after_epochs): every
    # graph, training and evaluation, is compiled with them frozen too.
    frozen = [p for group in training.optimizer.param_groups if group.get("train_epochs") is not None
              for p in group["params"]] if training.world.size == 1 else []
    for freeze in [False, True] if frozen else [False]:
        for param in frozen:
            param.requires_grad_(not freeze)
        if training.master is not None:
            training.master.sync_requires_grad()
        training.train_forward.train()
        # One batch of each global size, so every rank runs as many backward passes (DDP's collectives)
        # on its own share's size, each micro-batch of gradient accumulation (as the step splits it).
        for batch in sorted({end - start: i for i, (start, end) in enumerate(train_loader.bounds)}.values()):
            start, end = train_loader.share(batch)
            share = inputs(train_loader, end - start)
            for micro in share.tensor_split(micro_batches(end - start, training.train_step.accumulate)):
                for _ in range(runs):
                    with autocast:
                        training.train_forward(micro).float().mean().backward()
        training.optimizer.zero_grad(set_to_none=True)
        training.train_forward.zero_grad(set_to_none=True)  # (a half copy's own gradients)
        training.eval_model.eval()
        with torch.no_grad():
            for loader in [loader for loader in (training.test_loader, training.val_loader) if loader is not None]:
                for size in sorted({end - start for start, end in loader.bounds}):
                    for _, view in tta_views(inputs(loader, size), tta):
                        for _ in range(runs):
                            with autocast:
                                training.eval_model(view)
    for param in frozen:
        param.requires_grad_(True)
    if training.master is not None:
        training.master.sync_requires_grad()
    training.model.load_state_dict(saved)
    restore_rng(rng)
    training.graphs_after_warm_up = compiled_graphs()


def build_training(cfg: DictConfig, setup: Setup, model: torch.nn.Module, first_conv: torch.nn.Conv2d | None,
                   data: PreparedData, budget_s: float) -> tuple[Training, Plan]:
    """The loaders (training; test, then validation if the data holds a split, of which this rank keeps
    its share), optimizer, scaler, averaging, compiled forward and step of a run, and its Plan; every
    decision before the loop. The training forward is wrapped in this order: memory format (already
    set on `model`), DDP under several processes, then torch.compile."""
    t, world, device = cfg.trainer, setup.world, setup.device
    # Each rank draws its own dropout and stochastic-depth masks (the weights are already alike).
    torch.manual_seed(rank_seed(t.seed, world.rank))
    if first_conv is not None and t.whiten_freeze:
        first_conv.weight.requires_grad_(False)
    bias_epochs = ({id(first_conv.bias): t.whiten_bias_epochs}
                   if first_conv is not None and first_conv.bias is not None and t.whiten_bias_epochs is not None
                   else None)
    evaluation_sets = [(data.test_images, data.test_labels)]
    if len(data.val_labels):
        evaluation_sets.append((data.val_images, data.val_labels))
    check_shares(t, len(data.train_labels), [len(labels) for _, labels in evaluation_sets], world.size)
    augmentation = build_augmentation(cfg.aug, len(data.classes), len(data.train_labels), t.seed, t.label_smoothing)
    train_loader = DeviceLoader(data.train_images, data.train_labels, t.batch_size * t.accumulate, data.preprocess,
                                augmentation, seed=t.seed, memory_format=setup.memory_format, drop_last=t.drop_last,
                                world=world, per_epoch=augmentation.per_epoch)
    test_loader, val_loader = [
        DeviceLoader(torch.from_numpy(images[share]).to(device), torch.from_numpy(labels[share]).to(device),
                     t.eval_batch_size, data.preprocess, shuffle=False, memory_format=setup.memory_format)
        for images, labels in evaluation_sets for share in [slice(*world.shard(len(labels)))]
    ] + [None] * (2 - len(evaluation_sets))
    plan = Plan(math.ceil(t.epochs * len(train_loader)), len(train_loader), budget_s)
    optimizer = build_optimizer(cfg.optim, model, bias_epochs, own_decay=t.whiten_bias_schedule == "linear")
    scaler = torch.amp.GradScaler(device.type, enabled=setup.amp_dtype == torch.float16)
    ema = EMA(model, t.ema, warmup=t.ema_warmup) if t.ema else None
    lookahead = (Lookahead(model, t.lookahead.every, t.lookahead.decay, t.lookahead.decay_power)
                 if t.lookahead.every else None)

    def compiled_if_asked(module: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(module, dynamic=False, mode=t.compile_mode) if t.compile else module

    master = MasterWeights(model, setup.amp_dtype) if t.precision == "half" else None
    network = master.half if master else model  # what computes: the model, or its half copy
    compiled = compiled_if_asked(network)  # evaluation reads the plain module; training, DDP's wrapper if any
    train_forward = compiled if world.size == 1 else compiled_if_asked(world.wrap(network))
    train_step = TrainStep(model, train_forward, optimizer, scaler, augmentation.mix, setup.autocast,
                           build_schedule(cfg.sched), plan, train_loader.generator, ema, lookahead, world,
                           None if t.clip_grad is None else GradientClipping(t.clip_grad, t.clip_mode), t.accumulate,
                           master)
    return Training(model, train_forward, ema.module if ema else compiled, optimizer, scaler, train_step,
                    train_loader, test_loader, val_loader, ema, lookahead, world, master=master), plan
