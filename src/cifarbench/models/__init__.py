"""The model zoo: one file per family; each variant registered under the name configs use.

`build_model(cfg, num_classes, shape)` builds `cfg.name` with the config's other fields as keyword
arguments (null fields take the family's default) and the dataset's input shape as the builder's
`in_channels` and `image_size` arguments. Every network class says in `INPUTS` what it does on inputs
other than CIFAR's 3×32×32; `cifarbench models` lists them all, with that note.
"""
from __future__ import annotations

# Imported for their @MODELS.register side effect; the list is the zoo.
from cifarbench.models import (  # noqa: F401
    alexnet, chainer, keras_cnn, keras_resnet, lenet, resnet, resnet_cifar, speednet,
)
from cifarbench.models.registry import (
    COMMON_FIELDS, MODELS, build_model, count_params, input_arguments, list_models,
)

__all__ = ["COMMON_FIELDS", "MODELS", "build_model", "count_params", "input_arguments", "list_models"]
