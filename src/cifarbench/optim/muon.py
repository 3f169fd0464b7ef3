"""Muon for hidden layers, another optimizer for the rest, as one optimizer object.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) orthogonalises the momentum of
each weight matrix with a Newton–Schulz iteration. `Muon` here steps `torch.optim.Muon`'s update
(its momentum, its decoupled weight decay, its lr adjustment per shape) on tensors of any dim ≥ 2:
a conv filter bank (out, in, kh, kw) is orthogonalised as the matrix (out, in·kh·kw), read as a view
in the tensor's own memory order (orthogonalisation commutes with permuting columns, so a
channels_last filter bank needs no copy). Matrices of one shape are orthogonalised together, as one
stacked batch (`newton_schulz`), so a step launches the iteration's kernels once per shape rather
than once per matrix. With `normalize_weights` each matrix is first rescaled to Frobenius norm
√out (airbench94_muon's per-step weight normalisation: the update, whose singular values are near
1, then moves the weights by a fixed fraction whatever their scale).

Which weights are Muon's is the role "hidden" of `cifarbench.optim.roles`: the first weight layer (it
sees pixels) and the classifier (it makes logits) stay with the auxiliary optimizer, as in the speed
records that use Muon; a frozen first layer (a whitening conv) still counts as the first, so every
trainable conv after it is Muon's (airbench94_muon).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan's quintic: the steepest slope at zero that stays in ~[0.7, 1.2]


def _column_order(tensor: torch.Tensor) -> list[int]:
    return sorted(range(1, tensor.ndim), key=lambda dim: -tensor.stride(dim))


def matrix_view(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (out, ...) as the matrix (out, everything else) without copying, whatever its memory format."""
    return tensor.permute(0, *_column_order(tensor)).view(tensor.shape[0], -1)


def from_matrix(matrix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of `matrix_view(like)`: `matrix` (out, rest) as a tensor of `like`'s shape."""
    order = [0, *_column_order(like)]
    return matrix.reshape([like.shape[d] for d in order]).permute(*[order.index(dim) for dim in range(like.ndim)])


def newton_schulz(matrices: torch.Tensor, coefficients=NS_COEFFICIENTS, steps: int = 5,
                  eps: float = 1e-7) -> torch.Tensor:
    """The quintic Newton–Schulz iteration X ← aX + (b·XXᵀ + c·(XXᵀ)²)X, in bfloat16, of each matrix
    of a stack `matrices` (n, rows, cols) (a single (rows, cols) matrix works too), each first scaled
    to Frobenius norm 1 (dividing by max(norm, eps)) so its singular values lie in (0, 1]. Returns the
    same shape in bfloat16: with Jordan's coefficients (a, b, c) = (3.4445, −4.7750, 2.0315) and 5
    steps the singular values land in about [0.7, 1.2] (U S' Vᵀ, S' near 1, for G = U S Vᵀ), as
    torch.optim.Muon's `_zeropower_via_newtonschulz`, which this equals matrix by matrix (up to bf16
    rounding); airbench94_muon uses the same coefficients, 3 steps."""
    a, b, c = coefficients
    x = matrices.bfloat16()
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    batched = x.ndim == 3
    multiply_add = torch.baddbmm if batched else torch.addmm
    for _ in range(steps):
        gram = x @ x.mT
        update = multiply_add(gram, gram, gram, beta=b, alpha=c)
        x = multiply_add(x, update, x, beta=a)
    return x.mT if tall else x


class _Stack(NamedTuple):
    """The parameters of one matrix shape and dtype in a step (`indices` into its list), stepped together,
    and their lr multiplier (`Muon.lr_ratio`)."""
    indices: tuple[int, ...]
    lr_ratio: float


class _Plan(NamedTuple):
    """What a step over one list of parameters needs that their shapes fix: the stacks, and √out of each
    parameter (the Frobenius norm weight normalisation gives it)."""
    stacks: tuple[_Stack, ...]
    sqrt_out: list[float]


class Muon(torch.optim.Optimizer):
    """Muon on parameters of dim ≥ 2 (each as `matrix_view`). Per group: `lr`, `momentum`
    (torch.optim.Muon's: buf ← lerp(buf, g, 1 − momentum), which is airbench's buf ← momentum·buf + g
    times (1 − momentum), a scale the orthogonalisation removes), `nesterov`, `weight_decay`
    (decoupled: W ← W·(1 − lr·decay)), `ns_coefficients` (a, b, c), `ns_steps`, `eps`,
    `adjust_lr_fn` (torch.optim.Muon's: None/"original" lr·√max(1, out/in), "match_rms_adamw"
    0.2·√max(out, in)·lr) and `normalize_weights` (W ← W·√out / ‖W‖_F before the update). A step:
    momentum, decay and normalisation with foreach ops over the group; then per matrix shape,
    Newton–Schulz of its updates as one stack, one cast to the weights' dtype and one foreach add.
    The grouping by shape and the lr multipliers are worked out once per list of parameters that have
    gradients (kept outside the state, so state_dict is torch.optim.Optimizer's own). Raises
    ValueError for a parameter of dim < 2."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_coefficients=NS_COEFFICIENTS, ns_steps: int = 5, eps: float = 1e-7,
                 adjust_lr_fn: str | None = None, normalize_weights: bool = False):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_coefficients=tuple(ns_coefficients), ns_steps=ns_steps, eps=eps,
                        adjust_lr_fn=adjust_lr_fn, normalize_weights=normalize_weights)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon steps tensors of dim >= 2 only")
        self._plans: dict[tuple, _Plan] = {}

    def __setstate__(self, state: dict):
        super().__setstate__(state)  # (a copy or an unpickled optimizer: torch's state has no plans)
        self._plans = {}

    @staticmethod
    def lr_ratio(adjust_lr_fn: str | None, matrix_shape: tuple[int, int]) -> float:
        """The lr multiplier `adjust_lr_fn` gives a (rows, cols) matrix (torch.optim.Muon's `_adjust_lr`)."""
        rows, cols = matrix_shape
        if adjust_lr_fn == "match_rms_adamw":
            return 0.2 * math.sqrt(max(rows, cols))
        return math.sqrt(max(1.0, rows / cols))

    def _plan(self, params: list[torch.Tensor], adjust_lr_fn: str | None) -> _Plan:
        key = (adjust_lr_fn, *map(id, params))
        plan = self._plans.get(key)
        if plan is None:
            by_shape: dict[tuple, list[int]] = {}
            for i, p in enumerate(params):
                by_shape.setdefault((p.shape[0], p[0].numel(), p.dtype), []).append(i)
            stacks = tuple(_Stack(tuple(indices), self.lr_ratio(adjust_lr_fn, (rows, cols)))
                           for (rows, cols, _), indices in by_shape.items())
            plan = self._plans[key] = _Plan(stacks, [math.sqrt(p.shape[0]) for p in params])
        return plan

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            plan = self._plan(params, group["adjust_lr_fn"])
            grads = [p.grad for p in params]
            buffers = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buffers.append(state["momentum_buffer"])
            momentum = group["momentum"]
            torch._foreach_lerp_(buffers, grads, 1 - momentum)
            updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
            lr = group["lr"]
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            if group["normalize_weights"]:
                scales = torch._foreach_norm(params)
                torch._foreach_reciprocal_(scales)
                torch._foreach_mul_(scales, plan.sqrt_out)
                torch._foreach_mul_(params, scales)
            for indices, lr_ratio in plan.stacks:
                stacked = newton_schulz(torch.stack([matrix_view(updates[i]) for i in indices]),
                                        group["ns_coefficients"], group["ns_steps"], group["eps"])
                orthogonal = stacked.to(params[indices[0]].dtype).unbind()
                torch._foreach_add_([params[i] for i in indices],
                                    [from_matrix(o, updates[i]) for i, o in zip(indices, orthogonal)],
                                    alpha=-lr * lr_ratio)


class MuonWithAuxiliary:
    """Steps `Muon` on the given groups and `auxiliary` on everything else. Its `param_groups` are
    both optimizers' groups (Muon's first), so schedules and GradScaler (which unscales every
    group's gradients) see all."""

    def __init__(self, matrices: list[dict], auxiliary: torch.optim.Optimizer, **muon_options):
        self.muon = Muon(matrices, **muon_options)
        self.auxiliary = auxiliary
        self.param_groups = self.muon.param_groups + auxiliary.param_groups

    def step(self):
        self.muon.step()
        self.auxiliary.step()

    def zero_grad(self, set_to_none: bool = True):
        self.muon.zero_grad(set_to_none)
        self.auxiliary.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "auxiliary": self.auxiliary.state_dict()}

    def load_state_dict(self, state: dict):
        self.muon.load_state_dict(state["muon"])
        for param, param_state in self.muon.state.items():  # (checkpoints before 2026-12 hold (out, rest) buffers)
            buffer = param_state.get("momentum_buffer")
            if buffer is not None and buffer.shape != param.shape:
                param_state["momentum_buffer"] = from_matrix(buffer, param).clone(memory_format=torch.preserve_format)
        self.auxiliary.load_state_dict(state["auxiliary"])
