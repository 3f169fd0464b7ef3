"""One training step, built once before the loop: set the scheduled lr, mix, forward, the mix's loss and
backward (per micro-batch under gradient accumulation), gradient clipping, optimizer step, weight
averaging; the running training metrics stay on the device."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from cifarbench.aug import Mix
from cifarbench.engine.averaging import EMA, Lookahead
from cifarbench.engine.precision import MasterWeights
from cifarbench.core.distributed import World
from cifarbench.sched import Schedule, progress

DIVERGENCE_CHECK_EVERY = 50  # steps; each check is one host–device sync


def micro_batches(size: int, accumulate: int) -> int:
    """How many micro-batches a step of `size` images trains in under `trainer.accumulate`: `accumulate`,
    fewer only when the batch has fewer images (an epoch's last partial batch); `Tensor.tensor_split` of the
    batch into that many gives their sizes, which differ by at most one."""
    return max(1, min(accumulate, size))


@dataclass(frozen=True)
class GradientClipping:
    """Gradient clipping (`trainer.clip_grad`, `trainer.clip_mode`), as timm's `--clip-grad`/`--clip-mode`
    and PyTorch's `clip_grad_norm_`/`clip_grad_value_`: mode "norm" rescales all gradients together so
    that their global L2 norm is at most `max` (Pascanu et al. 2013); "value" clamps each gradient
    element to [−max, max].

    Called after the backward with the gradients unscaled (fp16: GradScaler.unscale_ first) and, under
    DDP, already all-reduced, so every rank clips the same gradients alike. Returns the global L2 norm
    of the gradients before clipping, a float32 scalar on the device (no host sync); non-finite when an
    fp16 step overflowed (the scaler then skips that step)."""
    max: float
    mode: str = "norm"  # one of validate.CLIP_MODES

    def __call__(self, parameters: list[nn.Parameter]) -> torch.Tensor:
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = nn.utils.get_total_norm(grads)
        if self.mode == "norm":
            nn.utils.clip_grads_with_norm_(parameters, self.max, norm)
        else:
            nn.utils.clip_grad_value_(parameters, self.max)
        return norm.float()


def freeze_after_epochs(group: dict):
    """Stop the parameters of optimizer group `group` requiring gradients (host only), as airbench94
    stops its whitening bias: autograd then computes no gradient for them (nor, when nothing before them
    trains, the backward of the layers they feed from), and the optimizer skips them (no gradient), where
    an lr of 0 would still run their momentum and update kernels every step. Not under DDP, whose
    reducer waits for a gradient of every parameter it was built with (there the lr of 0 stops them).
    Under torch.compile the frozen graph is compiled before training too (build.warm_up_compiled). Under
    trainer.precision=half these are the master's parameters: the half copy, which computes, follows
    with MasterWeights.sync_requires_grad."""
    for param in group["params"]:
        param.requires_grad_(False)


@dataclass
class Plan:
    """How long training runs: `total_steps` optimizer steps of `steps_per_epoch`, or `budget_s`
    seconds of training, whichever ends first."""
    total_steps: int
    steps_per_epoch: int
    budget_s: float = math.inf


class TrainStep:
    """`step(images, labels, step, elapsed_s, loss_weight)` trains on one batch: images (B, C, H, W)
    float as the loader yields them, labels (B,) int64; `step` is the number of steps done before this
    one and `elapsed_s` the training seconds so far (both decide the lr); the mean loss is weighted by
    `loss_weight` for the backward (DeviceLoader.loss_weight: 1.0 but for unequal shares under DDP).
    `mix` (aug.Augmentation.mix) mixes the batch, drawing from `generator` (the training loader's
    augmentation generator), and its `criterion` is the loss (cross-entropy with label smoothing
    without a mix).

    The lr of each optimizer group is base lr × schedule × the group's `lr_scale`, and 0 once the
    group's `train_epochs` are over (with `own_decay`: base lr × (1 − step / its steps) × `lr_scale`,
    clamped at 0, whatever the schedule). Training loss and accuracy since the last `reset()` accumulate on
    the device; a divergence check reads the window's losses once every DIVERGENCE_CHECK_EVERY steps.
    `forward` is the training forward (torch.compile's and DDP's wrappers when asked), `model` the plain
    module the averaging reads. In a `world` of several processes the window's sums are all-reduced
    when read or saved, so they count the images of every rank.

    With `accumulate` K > 1 (`trainer.accumulate`, as timm's `--grad-accum-steps` and Lightning's
    `accumulate_grad_batches`) the batch, K micro-batches' worth (the loader's batch is
    `trainer.batch_size` × K), is mixed as a whole, then split into K micro-batches (`micro_batches`),
    each forwarded and backpropagated in turn with its loss weighted by its share of the batch's images,
    so the summed gradients are those of the mean loss over the whole batch: one optimizer step, the
    update of the K× larger batch, with the activations of one micro-batch in memory. Without BatchNorm
    it equals the large batch's update up to float rounding; with BatchNorm each micro-batch is
    normalised by its own statistics (and the running statistics are updated K times), as in timm and
    Lightning, so it differs from the large batch. Under DDP only the last micro-batch all-reduces
    (the others run in `no_sync`). Steps, the schedule and the budget count optimizer steps.

    With `master` (trainer.precision=half, engine/precision.py) `forward` runs the half copy of
    `model`: its gradients are copied into `model`'s (fp32) after the backward, the optimizer steps
    `model`, and the updated weights (after averaging) are copied back into the half copy; the half
    network's gradients are cleared after the step in place of the optimizer's.

    With `clipping` the gradients (summed over the micro-batches) are clipped before the optimizer step
    and the window also holds the mean of their norms before clipping (over the steps whose norm was
    finite).
    """

    def __init__(self, model: nn.Module, forward: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, mix: Mix, autocast, schedule: Schedule, plan: Plan,
                 generator: torch.Generator | None = None, ema: EMA | None = None, lookahead: Lookahead | None = None,
                 world: World = World(), clipping: GradientClipping | None = None, accumulate: int = 1,
                 master: MasterWeights | None = None):
        self.model, self.forward, self.optimizer, self.scaler, self.world = model, forward, optimizer, scaler, world
        self.mix, self.autocast, self.schedule, self.plan = mix, autocast, schedule, plan
        self.generator, self.ema, self.lookahead, self.clipping = generator, ema, lookahead, clipping
        self.master = master
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.accumulate = accumulate
        self.no_sync = getattr(forward, "no_sync", contextlib.nullcontext)  # DDP's; nothing to skip on one process
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        device = next(model.parameters()).device
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0
        self.grad_norm_sum = torch.zeros((), device=device)
        self.grad_norm_steps = torch.zeros((), device=device)
        self.recent_losses = torch.zeros(DIVERGENCE_CHECK_EVERY, device=device)
        self.recent_lrs: dict[int, float] = {}

    def set_lr(self, step: int, elapsed_s: float) -> float:
        """Set every group's lr for step `step`; returns the schedule's multiplier. A group whose
        `train_epochs` are over gets lr 0 and, on one process, its parameters stop requiring gradients
        (`freeze_after_epochs`, once: at the first step past its epochs; under `master` in the half copy
        too)."""
        scale = self.schedule(step, self.plan.total_steps, elapsed_s, self.plan.budget_s)
        epoch = step // self.plan.steps_per_epoch
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            epochs = group.get("train_epochs")
            trains = epochs is None or epoch < epochs
            if epochs is not None and group.get("own_decay"):  # linear to 0 over its own epochs
                group_scale = max(0.0, 1 - step / (epochs * self.plan.steps_per_epoch))
            else:
                group_scale = scale * trains
            group["lr"] = base_lr * group_scale * group.get("lr_scale", 1.0)
            if not trains and self.world.size == 1 and group["params"][0].requires_grad:  # (once)
                freeze_after_epochs(group)
                if self.master is not None:  # the half copy, which computes, stops too
                    self.master.sync_requires_grad()
        return scale

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, step: int, elapsed_s: float,
                 loss_weight: float = 1.0):
        self.set_lr(step, elapsed_s)
        images, targets, labels = self.mix(images, labels, self.generator)  # accuracy counts the dominant label
        count = micro_batches(len(labels), self.accumulate)
        loss = None  # the batch's mean loss, for the window
        for i, (x, y, dominant) in enumerate(zip(images.tensor_split(count), targets.tensor_split(count),
                                                 labels.tensor_split(count))):
            share = len(dominant) / len(labels)
            weight = share * loss_weight  # 1.0 without accumulation and equal shares: no multiply launched
            with self.no_sync() if i < count - 1 else contextlib.nullcontext():  # all-reduce on the last
                with self.autocast:
                    logits = self.forward(x)
                    micro_loss = self.mix.criterion(logits, y)
                self.scaler.scale(micro_loss if weight == 1.0 else micro_loss * weight).backward()
            with torch.no_grad():  # (the metrics: no autograd bookkeeping, no detach)
                part = micro_loss.float() if count == 1 else micro_loss.float() * share
                loss = part if loss is None else loss + part
                self.correct += (logits.argmax(1) == dominant).sum()
        if self.master is not None:
            self.master.grads_to_master()
        if self.clipping is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
            norm = self.clipping(self.parameters)
            finite = torch.isfinite(norm)
            self.grad_norm_sum += torch.where(finite, norm, 0.0)
            self.grad_norm_steps += finite
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.master is not None:  # (the master's gradient buffers stay bound: the next step overwrites them)
            self.master.zero_grad()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if self.ema is not None:
            self.ema.update(self.model)
        looked_ahead = self.lookahead is not None and done % self.lookahead.every == 0
        if looked_ahead:  # (progress only where it is read)
            self.lookahead.after_step(done, progress(done, self.plan.total_steps, elapsed_s, self.plan.budget_s))
        if self.master is not None:  # (Lookahead moves frozen weights too; a step only the trained ones)
            self.master.weights_to_half(trained_only=not looked_ahead)
        self.seen += len(labels)
        self.loss_sum.add_(loss, alpha=len(labels))  # (one kernel: loss × images added)
        self.recent_losses[step % DIVERGENCE_CHECK_EVERY] = loss
        self.recent_lrs[done] = self.optimizer.param_groups[0]["lr"]

    def diverged(self, steps_done: int) -> str | None:
        """One sync: the first step of the current check window whose loss was not finite, with its lr."""
        bad = (~torch.isfinite(self.recent_losses)).nonzero()
        if not len(bad):
            if steps_done % DIVERGENCE_CHECK_EVERY == 0:  # a clean full window: start the next
                self.recent_losses.zero_()
                self.recent_lrs.clear()
            return None
        bad_step = (steps_done - 1) // DIVERGENCE_CHECK_EVERY * DIVERGENCE_CHECK_EVERY + bad[0].item() + 1
        return f"loss became non-finite at step {bad_step} (lr {self.recent_lrs.get(bad_step, math.nan):.3g})"

    def sums(self) -> list[float]:
        """[summed loss, correct, images, summed gradient norm, steps with a finite norm] since the last
        reset, over every rank (one sync); the norms are the same on every rank, so rank 0's are taken."""
        device = self.loss_sum.device
        main = float(self.world.main)
        return self.world.sum(torch.stack([self.loss_sum.double(), self.correct.double(),
                                           torch.tensor(float(self.seen), device=device),
                                           self.grad_norm_sum.double() * main,
                                           self.grad_norm_steps.double() * main])).tolist()

    def window(self) -> dict:
        """Training metrics since the last reset (one sync): mean loss and accuracy (fractions), images,
        and with clipping the mean gradient norm before clipping (`grad_norm`; else None)."""
        loss_sum, correct, seen, norm_sum, norm_steps = self.sums()
        clipped = self.clipping is not None
        return {"seen": int(seen), "train_loss": loss_sum / seen if seen else math.nan,
                "train_acc": correct / seen if seen else math.nan,
                "grad_norm": (norm_sum / norm_steps if norm_steps else math.nan) if clipped else None}

    def reset(self):
        for total in (self.loss_sum, self.correct, self.grad_norm_sum, self.grad_norm_steps):
            total.zero_()
        self.seen = 0

    def state_dict(self) -> dict:
        """The window's sums over every rank (a collective under DDP: every rank calls it)."""
        loss_sum, correct, seen, norm_sum, norm_steps = self.sums()
        return {"loss_sum": torch.tensor(loss_sum, dtype=torch.float32), "correct": torch.tensor(int(correct)),
                "seen": int(seen), "grad_norm_sum": torch.tensor(norm_sum, dtype=torch.float32),
                "grad_norm_steps": torch.tensor(norm_steps, dtype=torch.float32)}

    def load_state_dict(self, state: dict):
        """Rank 0 takes the saved sums and the other ranks start from zero, so the sums over ranks,
        with any number of processes, are the saved ones."""
        self.reset()
        if self.world.main:
            self.loss_sum.copy_(state["loss_sum"])
            self.correct.copy_(state["correct"])
            self.seen = state["seen"]
            self.grad_norm_sum.copy_(torch.as_tensor(state.get("grad_norm_sum", 0.0)))  # (absent in checkpoints before clipping)
            self.grad_norm_steps.copy_(torch.as_tensor(state.get("grad_norm_steps", 0.0)))
