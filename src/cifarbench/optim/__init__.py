"""Optimizers by name. `build_optimizer(cfg, model)` applies weight decay to weight matrices and
conv filters only (tensors of dim ≥ 2), never to biases or norm parameters. A model with a
`conv_weight_decay` attribute (Keras-style L2 on conv kernels) gets that decay on its conv weights
instead of the optimizer's, so the two never add up."""
from __future__ import annotations

import torch
from torch import nn

from cifarbench.optim.adabound import AdaBound
from cifarbench.registry import Registry

OPTIMIZERS = Registry("optimizer")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    conv_decay = getattr(model, "conv_weight_decay", None)
    groups: dict[float, list] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad:
                continue
            if param.ndim < 2:
                decay = 0.0
            elif conv_decay is not None and isinstance(module, nn.Conv2d):
                decay = conv_decay
            else:
                decay = weight_decay
            groups.setdefault(decay, []).append(param)
    return [{"params": params, "weight_decay": decay} for decay, params in groups.items()]


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


@OPTIMIZERS.register()
def adamw(params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
          ) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, fused=_fused(params) or None)


@OPTIMIZERS.register()
def adabound(params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), final_lr: float = 0.1,
             gamma: float = 1e-3, eps: float = 1e-8, amsbound: bool = False) -> torch.optim.Optimizer:
    return AdaBound(params, lr=lr, betas=tuple(betas), final_lr=final_lr, gamma=gamma, eps=eps, amsbound=amsbound)


@OPTIMIZERS.register()
def amsbound(params, **fields) -> torch.optim.Optimizer:
    return adabound(params, **{**fields, "amsbound": True})


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    fields = {k: v for k, v in cfg.items() if k not in ("name", "weight_decay")}
    return OPTIMIZERS.build(cfg.name, param_groups(model, cfg.get("weight_decay") or 0.0), **fields)


__all__ = ["OPTIMIZERS", "AdaBound", "build_optimizer", "param_groups"]
