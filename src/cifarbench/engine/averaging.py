"""Weight averaging a recipe may turn on: an exponential moving average of the weights (evaluated
instead of the model) and Lookahead (which pulls the trained weights back to a slow average).

Both average the parameters and the floating-point buffers (batch-norm statistics) and copy integer
buffers, in place with `torch._foreach_*` kernels, and keep their step counts on the host, so an
update never waits for the device.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def averaged_tensors(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(floating-point parameters and buffers, other buffers) of `model`, in a fixed order."""
    tensors = [*model.parameters(), *model.buffers()]
    return [t for t in tensors if t.is_floating_point()], [t for t in tensors if not t.is_floating_point()]


class EMA:
    """Exponential moving average of the weights with warm-up, as timm's ModelEmaV3 and TensorFlow's
    ExponentialMovingAverage(num_updates) do: after update n the decay is min(decay, (1 + n) / (10 + n)),
    so early averages are not dominated by the initial weights.

    Args:
        model: the trained module (its tensors are read at each update, never written).
        decay: the decay in (0, 1), e.g. 0.999 (an average over roughly 1 / (1 − decay) steps).
        warmup: ramp the decay as above (True) or use `decay` from the first update.
    Raises:
        ValueError: if decay is not in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0 < decay < 1:
            raise ValueError(f"trainer.ema={decay}; it must be a decay in (0, 1) or null")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self._floats, self._others = averaged_tensors(self.module)

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module):
        self.updates += 1
        floats, others = averaged_tensors(model)
        torch._foreach_lerp_(self._floats, floats, 1 - self.decay_at(self.updates))
        if others:
            torch._foreach_copy_(self._others, others)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict):
        self.updates = state["updates"]
        self.module.load_state_dict(state["module"])


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any optimizer: every `every` steps the slow weights move
    (1 − d) of the way to the fast (trained) ones and the fast weights restart from them.

    d = decay · progress**decay_power: Zhang et al. use a constant d = 1 − α = 0.5 (power 0);
    airbench94 uses decay 0.95⁵ with power 3, so the pull-back grows as training ends. `finish()`
    leaves the model on the slow weights, as airbench94 does after its last step.
    """

    def __init__(self, model: nn.Module, every: int, decay: float = 0.5, decay_power: float = 0.0):
        self.tensors, _ = averaged_tensors(model)
        self.slow = [t.detach().clone() for t in self.tensors]
        self.every, self.decay, self.decay_power = every, decay, decay_power

    @torch.no_grad()
    def after_step(self, step: int, progress: float):
        """Call after optimizer step number `step` (1-based), at training progress in [0, 1]."""
        if step % self.every == 0:
            torch._foreach_lerp_(self.slow, self.tensors, 1 - self.decay * float(progress) ** self.decay_power)
            torch._foreach_copy_(self.tensors, self.slow)

    @torch.no_grad()
    def finish(self):
        torch._foreach_copy_(self.tensors, self.slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict):
        torch._foreach_copy_(self.slow, [t.to(s.device) for t, s in zip(state["slow"], self.slow)])
