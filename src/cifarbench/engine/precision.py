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
    `weights_to_half` after each change of the master weights (an optimizer step, Lookahead, a restore)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        self.model, self.dtype = model, dtype
        self.half = half_network(model, dtype)
        pairs = [(m, h) for m, h in zip(model.parameters(), self.half.parameters()) if m is not h]
        self.master = [m for m, _ in pairs]
        self.copies = [h for _, h in pairs]
        self.grads = [torch.empty_like(m) for m in self.master]  # the master's gradients, allocated once

    @torch.no_grad()
    def grads_to_master(self):
        """The half copy's gradients into the master's (fp32; into buffers allocated once, so the
        optimizer's zero_grad(set_to_none=True) costs no allocation per step) and cleared in the copy
        (the norm layers' are the master's already)."""
        with_grad = [i for i, h in enumerate(self.copies) if h.grad is not None]
        for i in with_grad:
            self.master[i].grad = self.grads[i]
        if with_grad:
            torch._foreach_copy_([self.grads[i] for i in with_grad], [self.copies[i].grad for i in with_grad])
        for i in with_grad:
            self.copies[i].grad = None

    @torch.no_grad()
    def weights_to_half(self):
        """The master weights, rounded to the half dtype, into the copy."""
        torch._foreach_copy_(self.copies, self.master)
