"""Initialisations and batch-norm settings any model can take from its config (`model.norm_momentum`,
`model.norm_eps`, `model.norm_weight`, `model.dirac_init`), and the whitening initialisation of the
first convolution (`trainer.whiten_init`), as the fastest CIFAR-10 speed runs (airbench94) use them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def configure_norms(model: nn.Module, momentum: float | None = None, eps: float | None = None,
                    weight: bool | None = None):
    """Set every batch norm's running-statistics momentum (PyTorch's convention: the weight of the new
    batch; airbench's "momentum 0.6" is 0.4 here), eps, and whether its scale trains (False: fixed at 1).
    None leaves the model's own choice.

    With a momentum set, a batch norm keeps no `num_batches_tracked` counter: PyTorch reads it only
    for momentum=None (a cumulative average), and counting costs one kernel per batch norm and training
    step (airbench94's BN has none on the GPU either: it is float-only state there). Running statistics
    are still tracked. Every batch norm's checkpoint keys are reconciled on load (`reconcile_norm_counters`),
    so checkpoints written with the counter load into a model without it, and the other way round."""
    reconcile_norm_counters(model)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            if momentum is not None:
                module.momentum = momentum
                if module.track_running_stats:
                    module.num_batches_tracked = None
            if eps is not None:
                module.eps = eps
            if weight is not None and module.weight is not None:
                module.weight.requires_grad_(weight)


def reconcile_norm_counters(model: nn.Module):
    """Register `norm_counter_hook` on every batch norm of `model` (again after a conversion that makes
    new modules, such as SyncBatchNorm's)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.register_load_state_dict_pre_hook(norm_counter_hook)


def norm_counter_hook(module: _BatchNorm, state_dict: dict, prefix: str, *args):
    """A batch norm's load_state_dict pre-hook: a saved `num_batches_tracked` is dropped where the module
    keeps no counter, and a missing one reads 0 where it does (checkpoints from before or after
    `configure_norms` removed it)."""
    key = prefix + "num_batches_tracked"
    if module.num_batches_tracked is None:
        state_dict.pop(key, None)
    elif module.track_running_stats and key not in state_dict:
        state_dict[key] = torch.zeros_like(module.num_batches_tracked)


@torch.no_grad()
def dirac_init(model: nn.Module):
    """Identity (Dirac) initialisation of the first `in_channels` filters of every convolution after
    the first whose output is at least as wide as its input, as airbench94 does: each such block
    starts by passing its input through (the other filters keep their random init)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1:]
    for conv in convs:
        if conv.groups == 1 and conv.out_channels >= conv.in_channels:
            nn.init.dirac_(conv.weight[:conv.in_channels])


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor, eps: float = 5e-4) -> nn.Conv2d:
    """Initialise the first convolution's filters so that its outputs on the training patches are
    white (decorrelated, unit variance), after airbench94: the filters are the patch covariance's
    eigenvectors scaled by 1/√(λ + eps), largest variance first, followed by their negatives if there
    is room. `images`: (N, C, H, W) float, preprocessed as in training. Returns the conv."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    patches = F.unfold(images.float(), conv.kernel_size).transpose(1, 2).flatten(0, 1).double()
    patches = patches - patches.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)).T.flip(0)
    filters = torch.cat([filters, -filters])[:conv.out_channels]
    conv.weight[:len(filters)] = filters.view(len(filters), *conv.weight.shape[1:]).to(conv.weight)
    if conv.bias is not None:
        conv.bias.zero_()
    return conv
