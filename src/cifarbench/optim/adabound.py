"""AdaBound / AMSBound (Luo et al., ICLR 2019): Adam whose per-parameter step size is clipped into
[lower(t), upper(t)], bounds that close in on a final SGD-like learning rate.

Same signature and rule as the authors' reference code (github.com/Luolc/AdaBound), in today's
PyTorch: `torch._foreach_*` ops over each group's tensor lists (one kernel launch per op and group
on CUDA), and the target `final_lr · lr / base_lr` follows the learning-rate schedule.
"""
from __future__ import annotations

import math

import torch


class AdaBound(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), final_lr: float = 0.1, gamma: float = 1e-3,
                 eps: float = 1e-8, weight_decay: float = 0, amsbound: bool = False):
        for name, value, ok in (("lr", lr, lr > 0), ("final_lr", final_lr, final_lr > 0), ("eps", eps, eps >= 0),
                                ("gamma", gamma, 0 <= gamma < 1), ("betas[0]", betas[0], 0 <= betas[0] < 1),
                                ("betas[1]", betas[1], 0 <= betas[1] < 1)):
            if not ok:
                raise ValueError(f"AdaBound: invalid {name} {value}")
        defaults = dict(lr=lr, betas=tuple(betas), final_lr=final_lr, gamma=gamma, eps=eps,
                        weight_decay=weight_decay, amsbound=amsbound)
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("base_lr", group["lr"])  # kept in state_dict, so a resumed run keeps its bounds

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("AdaBound does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsbound"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
            # Parameters that skipped steps (no gradient) have their own step count: batch by count.
            by_step: dict[int, list] = {}
            for p in params:
                self.state[p]["step"] += 1
                by_step.setdefault(self.state[p]["step"], []).append(p)
            for step, ps in by_step.items():
                self._update(group, ps, step)
        return loss

    def _update(self, group: dict, params: list, step: int):
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        exp_avg = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(exp_avg, beta1)
        torch._foreach_add_(exp_avg, grads, alpha=1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        if group["amsbound"]:
            max_exp_avg_sq = [self.state[p]["max_exp_avg_sq"] for p in params]
            torch._foreach_maximum_(max_exp_avg_sq, exp_avg_sq)
            exp_avg_sq = max_exp_avg_sq
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_add_(denom, group["eps"])

        step_size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        final_lr = group["final_lr"] * group["lr"] / group["base_lr"]
        lower = final_lr * (1 - 1 / (group["gamma"] * step + 1))
        upper = final_lr * (1 + 1 / (group["gamma"] * step)) if group["gamma"] else math.inf
        updates = torch._foreach_reciprocal(denom)
        torch._foreach_mul_(updates, step_size)
        torch._foreach_clamp_min_(updates, lower)
        torch._foreach_clamp_max_(updates, upper)
        torch._foreach_mul_(updates, exp_avg)
        torch._foreach_add_(params, updates, alpha=-1)
