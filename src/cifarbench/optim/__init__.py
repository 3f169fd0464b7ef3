"""Optimizers by name. `build_optimizer(cfg, model)` applies weight decay to weight matrices and
conv filters only (tensors of dim ≥ 2), never to biases or norm parameters. A model with a
`conv_weight_decay` attribute (Keras-style L2 on conv kernels) gets that decay on its conv weights
instead of the optimizer's, so the two never add up. Each group also says whether it holds the
weight matrices of hidden layers (`hidden_matrix`), which `optim=muon` gives to Muon."""
from __future__ import annotations

import functools

import torch
from torch import nn

from cifarbench.optim.adabound import AdaBound
from cifarbench.optim.muon import MuonWithAuxiliary, hidden_matrices
from cifarbench.core.registry import ConfigError, Registry

OPTIMIZERS = Registry("optimizer")
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def param_groups(model: nn.Module, weight_decay: float, norm_bias_lr_scale: float = 1.0,
                 train_epochs: dict[int, float] | None = None) -> list[dict]:
    """The model's trainable parameters in optimizer groups, each with `weight_decay`, `hidden_matrix`
    (Muon's), `lr_scale` (a multiplier of the scheduled lr: `norm_bias_lr_scale` for the biases of
    norm layers, airbench94's ×64) and `train_epochs` (the parameter trains during the first so many
    epochs only; `train_epochs` maps id(param) → epochs, e.g. the whitening conv's bias, 3)."""
    conv_decay = getattr(model, "conv_weight_decay", None)
    hidden = {id(p) for p in hidden_matrices(model)}
    train_epochs = train_epochs or {}
    groups: dict[tuple, list] = {}
    for module in model.modules():
        norm = isinstance(module, NORMS)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if param.ndim < 2:
                decay = 0.0
            elif conv_decay is not None and isinstance(module, nn.Conv2d):
                decay = conv_decay
            else:
                decay = weight_decay
            lr_scale = norm_bias_lr_scale if norm and name == "bias" else 1.0
            key = (decay, id(param) in hidden, lr_scale, train_epochs.get(id(param)))
            groups.setdefault(key, []).append(param)
    return [{"params": params, "weight_decay": decay, "hidden_matrix": matrix, "lr_scale": lr_scale,
             "train_epochs": epochs} for (decay, matrix, lr_scale, epochs), params in groups.items()]


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


OPTIMIZERS.register("amsbound")(functools.partial(adabound, amsbound=True))  # AdaBound's fields, amsbound on


@OPTIMIZERS.register(info="torch.optim.Muon on hidden-layer weight matrices, `auxiliary` on the rest")
def muon(params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
         adjust_lr_fn: str | None = None, auxiliary=None) -> MuonWithAuxiliary:
    """Muon's weight decay is decoupled (each step scales the weights by 1 - lr·decay); `auxiliary`
    ({name: sgd, lr: …} by default SGD with its defaults) decays the rest its own way."""
    auxiliary = dict(auxiliary or {"name": "sgd"})
    aux_name = auxiliary.pop("name", "sgd")
    if aux_name == "muon":
        raise ConfigError("optim.auxiliary.name=muon; the auxiliary optimizer must be another one, e.g. sgd or adamw")
    matrices = [group for group in params if group["hidden_matrix"]]
    if not matrices:
        raise ConfigError("optim=muon: this model has no hidden weight matrices (only a first and a last layer); "
                          "choose another optimizer")
    rest = OPTIMIZERS.build(aux_name, [group for group in params if not group["hidden_matrix"]], **auxiliary)
    return MuonWithAuxiliary(matrices, rest, lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                             adjust_lr_fn=adjust_lr_fn)


def build_optimizer(cfg, model: nn.Module, train_epochs: dict[int, float] | None = None) -> torch.optim.Optimizer:
    """`cfg.name` over `param_groups(model, ...)`; raises ConfigError for an unknown name or field."""
    fields = {k: v for k, v in cfg.items() if k not in ("name", "weight_decay", "norm_bias_lr_scale")}
    groups = param_groups(model, cfg.get("weight_decay") or 0.0, cfg.get("norm_bias_lr_scale") or 1.0, train_epochs)
    return OPTIMIZERS.build(cfg.name, groups, **fields)


__all__ = ["OPTIMIZERS", "AdaBound", "MuonWithAuxiliary", "build_optimizer", "param_groups"]
