"""Optimizers by name. `build_optimizer(cfg, model)` applies weight decay to weight matrices and
conv filters only (tensors of dim ≥ 2), never to biases or norm parameters."""
from __future__ import annotations

import torch
from torch import nn

from cifarbench.registry import Registry

OPTIMIZERS = Registry("optimizer")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def _fused(params) -> bool:
    """The fused CUDA kernels are the fastest; elsewhere PyTorch picks foreach or the loop itself."""
    return all(p.is_cuda for group in params for p in group["params"])


@OPTIMIZERS.register()
def sgd(params, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = True) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                           fused=_fused(params) or None)


@OPTIMIZERS.register()
def adam(params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
         ) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, fused=_fused(params) or None)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    fields = {k: v for k, v in cfg.items() if k not in ("name", "weight_decay")}
    return OPTIMIZERS.build(cfg.name, param_groups(model, cfg.get("weight_decay") or 0.0), **fields)


__all__ = ["OPTIMIZERS", "build_optimizer", "param_groups"]
