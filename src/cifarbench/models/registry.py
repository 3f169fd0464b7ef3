"""The model registry: `MODELS` (name → builder), filled by the family files' `@MODELS.register`, and
`build_model`, which builds an entry from its config for a dataset's input shape and classes."""
from __future__ import annotations

from torch import nn

from cifarbench.core.registry import Registry
from cifarbench.models.init import configure_norms, dirac_init

MODELS = Registry("model")


def list_models() -> list[str]:
    return MODELS.names()


# Fields every model takes (models/init.py); null keeps the family's choice.
COMMON_FIELDS = ("norm_momentum", "norm_eps", "norm_weight", "dirac_init")


def input_arguments(name: str, shape: tuple[int, int, int]) -> dict[str, int]:
    """The input shape (C, H, W), H = W, as the arguments builder `name` declares of `in_channels` and
    `image_size` (a builder without them, like a user's own, assumes 3×32×32)."""
    known = MODELS.fields(name)
    given = {"in_channels": shape[0], "image_size": shape[1]}
    return {k: v for k, v in given.items() if known is None or k in known}


def build_model(cfg, num_classes: int = 10, shape: tuple[int, int, int] = (3, 32, 32)) -> nn.Module:
    """`cfg.name` built with the config's other fields, for `num_classes` classes and inputs of `shape`
    (C, H, W); the common fields set batch-norm momentum, eps and scale training, and Dirac init of the
    convolutions (see `cifarbench.models.init`). Raises ConfigError for an unknown name or field, or an
    input too small for the network."""
    fields = {k: v for k, v in cfg.items() if k not in ("name", *COMMON_FIELDS)}
    model = MODELS.build(cfg.name, num_classes=num_classes, **input_arguments(cfg.name, tuple(shape)), **fields)
    configure_norms(model, cfg.get("norm_momentum"), cfg.get("norm_eps"), cfg.get("norm_weight"))
    if cfg.get("dirac_init"):
        dirac_init(model)
    return model


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
