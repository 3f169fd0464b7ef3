"""The model zoo: one file per family; each variant registered under the name configs use.

`build_model(cfg, num_classes)` builds `cfg.name` with the config's other fields as keyword
arguments (null fields take the family's default). `python -m cifarbench.models` lists them all.
"""
from __future__ import annotations

from torch import nn

from cifarbench.registry import Registry

MODELS = Registry("model")

# Imported for their @MODELS.register side effect; the list is the zoo.
from cifarbench.models import (  # noqa: E402,F401
    alexnet, chainer, keras_cnn, keras_resnet, lenet, resnet, resnet_cifar, speednet,
)


def list_models() -> list[str]:
    return MODELS.names()


def build_model(cfg, num_classes: int = 10) -> nn.Module:
    fields = {k: v for k, v in cfg.items() if k != "name"}
    return MODELS.build(cfg.name, num_classes=num_classes, **fields)


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "build_model", "count_params", "list_models"]
