"""Muon for hidden layers, another optimizer for the rest, as one optimizer object.

`torch.optim.Muon` orthogonalises the momentum of 2-D weight matrices only. A conv filter bank
(out, in, kh, kw) is handed to it as a 2-D view (out, in·kh·kw) of the same storage, so its
in-place updates land in the real parameter; the order of the flattened columns does not matter,
since orthogonalisation commutes with permuting columns, so a channels_last filter bank is viewed
in its own memory order. The first layer (it sees pixels) and the classifier (it makes logits)
stay with the auxiliary optimizer, as in the speed records that use Muon.
"""
from __future__ import annotations

import torch
from torch import nn


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable weights of dim ≥ 2 other than the first and the last such layer."""
    weights = [p for m in model.modules() for p in m.parameters(recurse=False) if p.requires_grad and p.ndim >= 2]
    return weights[1:-1]


def matrix_view(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as (out, everything else) without copying, whatever its memory format."""
    order = sorted(range(1, tensor.ndim), key=lambda dim: -tensor.stride(dim))
    return tensor.permute(0, *order).view(tensor.shape[0], -1)


class MuonWithAuxiliary:
    """Steps `torch.optim.Muon` on the given matrices and `auxiliary` on everything else. Its
    `param_groups` are both optimizers' groups (Muon's first), so schedules and GradScaler see all."""

    def __init__(self, matrices: list[dict], auxiliary: torch.optim.Optimizer, **muon_options):
        self.matrices: list[nn.Parameter] = [param for group in matrices for param in group["params"]]
        groups = []
        for group in matrices:
            views = []
            for param in group["params"]:
                view = matrix_view(param.detach())
                # Muon reads view.grad: point it at each fresh gradient (before GradScaler unscales it).
                param.register_post_accumulate_grad_hook(
                    lambda p, view=view: setattr(view, "grad", matrix_view(p.grad)))
                views.append(view)
            groups.append({**group, "params": views})
        self.muon = torch.optim.Muon(groups, **muon_options)
        self.auxiliary = auxiliary
        self.param_groups = self.muon.param_groups + auxiliary.param_groups

    def step(self):
        self.muon.step()
        self.auxiliary.step()

    def zero_grad(self, set_to_none: bool = True):
        self.muon.zero_grad(set_to_none)
        self.auxiliary.zero_grad(set_to_none)
        if set_to_none:  # (otherwise zeroing the views zeroed these too)
            for param in self.matrices:
                param.grad = None

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "auxiliary": self.auxiliary.state_dict()}

    def load_state_dict(self, state: dict):
        self.muon.load_state_dict(state["muon"])
        self.auxiliary.load_state_dict(state["auxiliary"])
