"""Optimizers by name. `build_optimizer(cfg, model)` applies weight decay to weight matrices and
conv filters only (tensors of dim ≥ 2), not to biases or norm parameters unless `optim.groups` gives
a role its own decay (and lr scale; `roles` names each parameter's). A model with a
`conv_weight_decay` attribute (Keras-style L2 on conv kernels) gets that decay on its conv weights
instead of the optimizer's, so the two never add up. Each group also says whether it holds the
weight matrices of hidden layers (`hidden_matrix`), which `optim=muon` gives to Muon."""
from __future__ import annotations

import functools

import torch
from torch import nn

from cifarbench.optim.adabound import AdaBound
from cifarbench.optim.muon import NS_COEFFICIENTS, MuonWithAuxiliary
from cifarbench.core.registry import ConfigError, Registry

OPTIMIZERS = Registry("optimizer")
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
COMMON_FIELDS = ("name", "weight_decay", "norm_bias_lr_scale", "groups")  # every optimizer's (param_groups' own)


# The roles a parameter plays, each of which `optim.groups` may give its own lr scale and weight decay.
ROLES = ("input", "hidden", "head", "bias", "norm_weight", "norm_bias")


def roles(model: nn.Module) -> dict[int, str]:
    """id(param) → its role, for every parameter (trainable or not): the weights of dim ≥ 2 are the
    first layer's ("input", a frozen one included), the last layer's ("head", the classifier) or the
    others' ("hidden": the trainable ones are Muon's, `param_groups`' `hidden_matrix`); a norm
    layer's scale and shift are "norm_weight" and "norm_bias"; any other parameter of dim < 2 is a
    "bias"."""
    weights = [p for m in model.modules() for p in m.parameters(recurse=False) if p.ndim >= 2]
    found = {}
    for module in model.modules():
        norm = isinstance(module, NORMS)
        for name, param in module.named_parameters(recurse=False):
            if param.ndim >= 2:
                found[id(param)] = ("input" if param is weights[0] else "head" if param is weights[-1]
                                    else "hidden")
            else:
                found[id(param)] = f"norm_{name}" if norm and name in ("weight", "bias") else "bias"
    return found


def param_groups(model: nn.Module, weight_decay: float, norm_bias_lr_scale: float = 1.0,
                 train_epochs: dict[int, float] | None = None, groups: dict | None = None,
                 own_decay: bool = False) -> list[dict]:
    """The model's trainable parameters in optimizer groups, each with `weight_decay`, `hidden_matrix`
    (Muon's), `lr_scale` (a multiplier of the scheduled lr: `norm_bias_lr_scale` for the biases of
    norm layers, airbench94's ×64) and `train_epochs` (the parameter trains during the first so many
    epochs only; `train_epochs` maps id(param) → epochs, e.g. the whitening conv's bias, 3) and
    `own_decay` (with `train_epochs`: its lr falls linearly from the base lr to 0 over those epochs,
    whatever the run's schedule, as airbench94_muon's whitening bias; else the run's schedule, then 0).

    `groups` (`optim.groups`) maps a role (ROLES, see `roles`) to {lr_scale, weight_decay}, either
    null or absent for the defaults: weight decay `weight_decay` on weights of dim ≥ 2 (a model's
    `conv_weight_decay` on its convs), none on the rest; lr scale 1 (`norm_bias_lr_scale` for
    "norm_bias"). airbench94_muon gives its classifier its own lr and every bias a decay."""
    conv_decay = getattr(model, "conv_weight_decay", None)
    role_of = roles(model)
    train_epochs = train_epochs or {}
    found: dict[tuple, list] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if param.ndim < 2:
                decay = 0.0
            elif conv_decay is not None and isinstance(module, nn.Conv2d):
                decay = conv_decay
            else:
                decay = weight_decay
            role = role_of[id(param)]
            lr_scale = norm_bias_lr_scale if role == "norm_bias" else 1.0
            own = (groups or {}).get(role) or {}
            decay = decay if own.get("weight_decay") is None else own["weight_decay"]
            lr_scale = lr_scale if own.get("lr_scale") is None else own["lr_scale"]
            key = (decay, role == "hidden", lr_scale, train_epochs.get(id(param)))
            found.setdefault(key, []).append(param)
    return [{"params": params, "weight_decay": decay, "hidden_matrix": matrix, "lr_scale": lr_scale,
             "train_epochs": epochs, "own_decay": own_decay and epochs is not None}
            for (decay, matrix, lr_scale, epochs), params in found.items()]


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


@OPTIMIZERS.register(info="Muon on hidden-layer weight matrices, `auxiliary` on the rest")
def muon(params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
         ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = 1e-7,
         adjust_lr_fn: str | None = None, normalize_weights: bool = False, auxiliary=None) -> MuonWithAuxiliary:
    """Muon (optim/muon.py) on the hidden matrices: Newton–Schulz `ns_steps` with `ns_coefficients`
    (a, b, c) after scaling by max(norm, `eps`); its weight decay is decoupled (each step scales the
    weights by 1 - lr·decay); `normalize_weights` rescales each matrix to Frobenius norm √out before
    each update (airbench94_muon). `auxiliary` ({name: sgd, lr: …} by default SGD with its defaults)
    steps the rest, decaying them its own way."""
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
                             ns_coefficients=tuple(ns_coefficients), eps=eps, adjust_lr_fn=adjust_lr_fn,
                             normalize_weights=normalize_weights)


def build_optimizer(cfg, model: nn.Module, train_epochs: dict[int, float] | None = None,
                    own_decay: bool = False) -> torch.optim.Optimizer:
    """`cfg.name` over `param_groups(model, ..., train_epochs, cfg.groups, own_decay)`; raises ConfigError
    for an unknown name or field."""
    fields = {k: v for k, v in cfg.items() if k not in COMMON_FIELDS}
    groups = param_groups(model, cfg.get("weight_decay") or 0.0, cfg.get("norm_bias_lr_scale") or 1.0, train_epochs,
                          cfg.get("groups"), own_decay)
    return OPTIMIZERS.build(cfg.name, groups, **fields)


__all__ = ["COMMON_FIELDS", "OPTIMIZERS", "ROLES", "AdaBound", "MuonWithAuxiliary", "build_optimizer", "param_groups",
           "roles"]
