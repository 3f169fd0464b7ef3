"""A half-precision network beside fp32 master weights (`trainer.precision=half`), after airbench94's
fp16 network with fp32 BatchNorm and mixed-precision training's master weights (Micikevicius et al.
2018, "Mixed Precision Training").

The half copy holds every parameter and buffer in the half dtype (`trainer.amp`'s: bf16 or fp16),
but the norm layers, which are the very modules of the fp32 network (shared, fp32: their statistics
and affine parameters stay in fp32 and are the ones the checkpoint saves). Its inputs are cast to the
half dtype on the way in and its logits to fp32 on the way out, so the loss, TTA averaging and metrics
are computed in fp32. The forward and backward run in the half dtype with no per-op casts (autocast's
cast of every weight at every step is gone); the optimizer steps the fp32 master weights (its state
in fp32), with the half gradients copied in after the backward (one foreach copy), and the updated
weights copied back into the half copy after the step (another). fp16's loss scaling is GradScaler's,
unchanged: the half gradients are of the scaled loss, and the master gradients are unscaled in fp32.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from cifarbench.optim import NORMS


def half_network(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` with its parameters and floating-point buffers in `dtype`, its norm layers the
    same (fp32) module objects as `model`'s; its forward takes inputs of any float dtype ((B, C, H, W),
    cast to `dtype`) and returns fp32 logits (B, classes)."""
    norms = [m for m in model.modules() if isinstance(m, NORMS)]
    half = copy.deepcopy(model, memo={id(m): m for m in norms})
    for module in half.modules():
        if isinstance(module, NORMS):
            continue
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = nn.Parameter(param.detach().to(dtype), param.requires_grad)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_floating_point():
                module._buffers[name] = buffer.to(dtype)
    half.register_forward_pre_hook(lambda module, args: tuple(a.to(dtype) for a in args))
    half.register_forward_hook(lambda module, args, output: output.float())
    return half


class MasterWeights:
    """The fp32 `model` (the master: what the optimizer steps, averaging reads and checkpoints save) and
    its `half_network` copy `half` (what trains and evaluates). `grads_to_master` after each backward,
    `zero_grad` after each optimizer step (in place of the optimizer's), `weights_to_half` after each
    change of the master weights (an optimizer step, Lookahead, a restore), and `sync_requires_grad`
    after parameters of `model` are frozen or unfrozen (step.freeze_after_epochs), so the half copy
    computes no gradient for them either.

    The master gradients are buffers allocated once and bound to the master parameters (`.grad`) once;
    each step overwrites them with the half gradients (one foreach copy), so nothing is allocated or
    re-bound per step. The pairs that train (master requires_grad) are listed once and again only when
    `sync_requires_grad` is called."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        self.model, self.dtype = model, dtype
        self.half = half_network(model, dtype)
        pairs = [(m, h) for m, h in zip(model.parameters(), self.half.parameters()) if m is not h]
        self.master = [m for m, _ in pairs]
        self.copies = [h for _, h in pairs]
        self.grads = [torch.empty_like(m) for m in self.master]  # the master's gradients, allocated once
        self.bound = False  # whether every trained master parameter's .grad is its buffer
        self.sync_requires_grad()

    def sync_requires_grad(self):
        """Give each half parameter its master's requires_grad and list the pairs that train again; a
        master parameter that stopped training loses its gradient (None: the optimizer skips it, as
        under fp32 training). Host only; call after any change of the master's requires_grad."""
        for m, h in zip(self.master, self.copies):
            h.requires_grad_(m.requires_grad)
            if not m.requires_grad:
                m.grad = None
        trained = [i for i, m in enumerate(self.master) if m.requires_grad]
        self.trained_master = [self.master[i] for i in trained]
        self.trained_copies = [self.copies[i] for i in trained]
        self.trained_grads = [self.grads[i] for i in trained]
        self.bound = False

    @torch.no_grad()
    def grads_to_master(self):
        """The half copy's gradients into the master's (fp32, their buffers; the norm layers' are the
        master's already). A trained parameter the backward gave no gradient (a branch stochastic depth
        dropped) gets none in the master either (None: the optimizer skips it this step)."""
        grads = [h.grad for h in self.trained_copies]
        if any(g is None for g in grads):  # (stochastic depth, an unused parameter: bind those with one)
            present = [i for i, g in enumerate(grads) if g is not None]
            for m in self.trained_master:
                m.grad = None
            for i in present:
                self.trained_master[i].grad = self.trained_grads[i]
            if present:
                torch._foreach_copy_([self.trained_grads[i] for i in present], [grads[i] for i in present])
            self.bound = False
            return
        if not self.bound or (grads and self.trained_master[0].grad is None):  # (after an optimizer's zero_grad)
            for m, g in zip(self.trained_master, self.trained_grads):
                m.grad = g
            self.bound = True
        if grads:
            torch._foreach_copy_(self.trained_grads, grads)

    def zero_grad(self):
        """Clear the half network's gradients (set to None), the shared norm layers' included; the
        master's buffers are overwritten by the next `grads_to_master`."""
        self.half.zero_grad(set_to_none=True)

    @torch.no_grad()
    def weights_to_half(self, trained_only: bool = False):
        """The master weights, rounded to the half dtype, into the copy: all of them, or with
        `trained_only` those that train (after an optimizer step, which changes no frozen weight)."""
        if trained_only:
            if self.trained_copies:
                torch._foreach_copy_(self.trained_copies, self.trained_master)
        else:
            torch._foreach_copy_(self.copies, self.master)
