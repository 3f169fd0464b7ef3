"""Config checks that run before any data is loaded, from one declaration per field.

Each group's fields are declared once below as `Field`s (a type, and a range or the allowed values);
`trainer`, `logger`, `paths` and `reported` are fixed `Schema`s (the trainer's fields with their defaults,
which conf/trainer/default.yaml is held to by a test), while `data`, `model`, `optim`, `sched` and `aug`
are `Entries`: the chosen entry's builder signature (its registry) says which fields it has beside the
group's common ones (its `Literal[...]` arguments, their allowed values), the group's table says what
each may hold. Then the data subsets and the batches they make are checked against the chosen dataset's
sizes, and the model is built on the meta device (shapes only) so its own values are checked too. A
failure raises ConfigError with one line naming the key, its value and what is allowed; an unknown field
lists the fields there are, with the nearest as "did you mean". Values that work but are likely mistakes
are logged as warnings that say why.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from cifarbench.aug import AUGMENTS, COMMON, MIXES, SUPPLIED, mix_fields
from cifarbench.data import DATASETS, PREPROCESSES, dataset_source
from cifarbench.core.device import (AMP_MODES, COMPILE_MODES, DEVICES, PRECISIONS, check_precision, resolve_amp,
                                   resolve_device)
from cifarbench.core.distributed import BACKENDS
from cifarbench.aug.tta import TTA_MODES
from cifarbench.run.trackers import check_installed
from cifarbench.data.split import subset_size
from cifarbench.models import COMMON_FIELDS, MODELS, build_model
from cifarbench.optim import COMMON_FIELDS as OPTIMIZER_COMMON_FIELDS, OPTIMIZERS, ROLES
from cifarbench.run.recorder import PLOTS
from cifarbench.core.registry import ConfigError, Registry, did_you_mean, unknown_fields
from cifarbench.sched import SCHEDULES

log = logging.getLogger(__name__)


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value) if isinstance(value, str) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _NoDefault:
    """The `default` of a Field that declares none (None is a default: null)."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Field:
    """What one config field may hold: `kind` is "number", "integer", "bool", "text", "choice" or
    "subset" (an integer >= 1 or a fraction in (0, 1)); numbers lie in [low, high] (an end is open when
    its flag says so, absent when None); a "choice" is one of `choices`; `items` > 0 makes the field a
    list of that many such values (-1: any number). A field of a fixed group (the trainer's) also carries
    its `default`, the value its YAML holds, and the `unit` a number counts in (for readers). An `ordered`
    list is a range: its values in non-decreasing order (low, high)."""
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    nullable: bool = False
    items: int = 0
    ordered: bool = False
    default: Any = NO_DEFAULT
    unit: str = ""

    def with_default(self, default: Any, unit: str = "") -> Field:
        """This field with its default value (and the unit it counts in)."""
        return Field(**{**vars(self), "default": default, "unit": unit})

    def describe(self) -> str:
        if self.kind == "choice":
            text = "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "text":
            text = "a string"
        elif self.kind == "subset":
            text = "an integer >= 1 (the first N images) or a fraction in (0, 1) (a stratified sample)"
        else:
            noun = "an integer" if self.kind == "integer" else "a number"
            if self.low == 0 and self.low_open and self.high is None:
                text = f"a positive {noun.split()[-1]}"
            elif self.high is None:
                text = noun if self.low is None else f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
            elif self.kind == "integer":
                text = f"an integer in {self.low:g}..{self.high:g}"
            else:
                opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
                text = f"{noun} in {opening}{self.low:g}, {self.high:g}{closing}"
        if self.items:
            count = "" if self.items < 0 else f"{self.items} "
            text = f"a list of {count}values{' in increasing order' if self.ordered else ''}, each {text}"
        return text + (" or null" if self.nullable else "")

    def _fits(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str)
        if self.kind == "subset":
            return (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or (
                isinstance(value, float) and 0 < value < 1)
        if not _is_number(value) or (self.kind == "integer" and not isinstance(value, int)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, key: str, value: Any, nullable: bool = False):
        """Raise ConfigError unless `value` fits (None fits when the field or the caller allows it)."""
        if value is None and (self.nullable or nullable):
            return
        if self.items:
            fits = isinstance(value, (list, tuple, ListConfig)) and (self.items < 0 or len(value) == self.items) \
                and all(value is not None and self._fits(v) for v in value) \
                and not (self.ordered and any(a > b for a, b in zip(value, value[1:])))
        else:
            fits = self._fits(value)
        if not fits:
            raise ConfigError(f"{key}={_show(value)}; it must be {self.describe()}")


def positive(integer: bool = False, nullable: bool = False) -> Field:
    return Field("integer" if integer else "number", low=0, low_open=True, nullable=nullable)


def at_least(low: float, integer: bool = False) -> Field:
    return Field("integer" if integer else "number", low=low)


def between(low: float, high: float, high_open: bool = False, low_open: bool = False, integer: bool = False,
            nullable: bool = False, items: int = 0) -> Field:
    return Field("integer" if integer else "number", low, high, low_open, high_open, nullable=nullable, items=items)


def value_range(low: float, high: float | None, low_open: bool = False) -> Field:
    """A (low, high) pair of numbers in [low, high] (`high` None: no bound) with low <= high."""
    return Field("number", low, high, low_open, items=2, ordered=True)


def one_of(*choices, nullable: bool = False) -> Field:
    return Field("choice", choices=choices, nullable=nullable)


FLAG, TEXT, INTEGER = Field("bool"), Field("text"), Field("integer")


def field_of(hint: Any) -> Field | None:
    """The Field a builder argument's annotation declares: `Literal[...]` its values, `bool`, `int`,
    `float` (an int is a number too), `str`, each `| None` making it nullable; None for any other type
    (checked by building the model on the meta device, or by the builder)."""
    args = typing.get_args(hint)
    nullable = type(None) in args and typing.get_origin(hint) in (typing.Union, types.UnionType)
    if nullable:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    if typing.get_origin(hint) is typing.Literal:
        return one_of(*typing.get_args(hint), nullable=nullable)
    simple = {bool: Field("bool"), int: Field("integer"), float: Field("number"), str: Field("text")}.get(hint)
    return None if simple is None else dataclasses.replace(simple, nullable=nullable)
FRACTION = between(0, 1)


@dataclass(frozen=True)
class Schema:
    """A group (or sub-group) with a fixed set of fields, each declared here; a `nullable` one may be
    null as a whole."""
    fields: dict[str, Any]  # field name → Field, or a Schema for a nested group
    nullable: bool = False

    def check(self, key: str, cfg: Any, nullable: bool = False):
        if cfg is None and (self.nullable or nullable):
            return
        if not isinstance(cfg, DictConfig):
            raise ConfigError(f"{key}={_show(cfg)}; it must be a group of fields: {', '.join(self.fields)}")
        unknown = [k for k in cfg if k not in self.fields]
        if unknown:
            raise unknown_fields(key, unknown, list(self.fields))
        for field, value in cfg.items():
            self.fields[field].check(f"{key}.{field}", value)


@dataclass(frozen=True)
class Entries:
    """A group whose entry (`name`) is a registry builder: the builder's keyword arguments and the
    group's `common` fields are the fields an entry has, less `supplied` (arguments the code passes
    itself); `table` declares what each holds (a builder field missing from it is passed unchecked).
    With `null_is_default`, every field but `name` may be null: the builder's default; otherwise only
    the fields declared nullable may."""
    registry: Registry
    common: tuple[str, ...]
    table: dict[str, Any]
    supplied: tuple[str, ...] = ()
    null_is_default: bool = True

    def fields(self, name: str) -> list[str] | None:
        own = self.registry.fields(name)
        return None if own is None else [*self.common, *(f for f in own if f not in self.supplied)]

    def check(self, key: str, cfg: Any, nullable: bool = False):
        if cfg is None and nullable:
            return
        if not isinstance(cfg, DictConfig) or "name" not in cfg:
            raise ConfigError(f"{key}={_show(cfg)}; it must be a group of fields with a name")
        known = self.fields(cfg.name)  # an unknown name: "unknown <kind> ...; available: ..."
        unknown = [k for k in cfg if known is not None and k not in known]
        if unknown:
            raise unknown_fields(f"{key} {cfg.name!r}", unknown, known)
        for field, value in cfg.items():
            if field != "name" and field in self.table:
                self.table[field].check(f"{key}.{field}", value, nullable=self.null_is_default)
        for field, hint in self.registry.annotations(cfg.name).items():  # the builder's own typed arguments
            declared = field_of(hint)
            if field in cfg and field not in self.table and declared is not None:
                declared.check(f"{key}.{field}", cfg[field], nullable=self.null_is_default)


WANDB_MODES = ("online", "offline", "disabled")  # run/trackers.py WandbLogger: wandb.init's modes
CLIP_MODES = ("norm", "value")  # engine/step.py GradientClipping: the global L2 norm, or each element

# The trainer's fields, each declared once: what it may hold, its default and its unit. conf/trainer/default.yaml
# holds the same fields and defaults in the same order, with the comments users read (tests/engine/test_failures.py
# holds the two together).
TRAINER = Schema({
    "epochs": positive().with_default(20, "epochs"),
    "batch_size": positive(integer=True).with_default(128, "images per step, all processes together"),
    "accumulate": positive(integer=True).with_default(1, "batches of batch_size per optimizer step"),
    "drop_last": FLAG.with_default(False),
    "budget_min": positive(nullable=True).with_default(None, "minutes of training steps"),
    "device": one_of(*DEVICES).with_default("auto"),
    "amp": one_of(*AMP_MODES).with_default("auto"),
    "precision": one_of(*PRECISIONS).with_default("autocast"),
    "seed": INTEGER.with_default(0),
    "channels_last": FLAG.with_default(False),
    "eval_every": positive().with_default(1, "epochs"),
    "eval_batch_size": positive(integer=True).with_default(1000, "images"),
    "progress": FLAG.with_default(True),
    "plots": one_of(*PLOTS).with_default("end"),
    "label_smoothing": between(0, 1, high_open=True).with_default(0.0, "probability mass spread over the classes"),
    "clip_grad": positive(nullable=True).with_default(None, "the gradients' L2 norm, or each element's magnitude"),
    "clip_mode": one_of(*CLIP_MODES).with_default("norm"),
    "deterministic": FLAG.with_default(False),
    "resume": Field("text", nullable=True).with_default(None),
    "max_requeues": at_least(0, integer=True).with_default(3, "times a preempted submitit job is requeued"),
    "compile": FLAG.with_default(False),
    "compile_mode": one_of(*COMPILE_MODES).with_default("default"),
    "ema": between(0, 1, high_open=True, nullable=True).with_default(None, "decay per optimizer step"),
    "ema_warmup": FLAG.with_default(True),
    "lookahead": Schema({"every": positive(integer=True, nullable=True).with_default(None, "optimizer steps"),
                         "decay": FRACTION.with_default(0.5), "decay_power": at_least(0).with_default(0.0)}),
    "tta": one_of(*TTA_MODES).with_default("none"),
    "whiten_init": FLAG.with_default(False),
    "whiten_freeze": FLAG.with_default(False),
    "whiten_bias_epochs": positive(nullable=True).with_default(None, "epochs"),
    "whiten_bias_schedule": one_of("run", "linear").with_default("run"),
    "sync_bn": FLAG.with_default(False),
    "dist_backend": one_of(*BACKENDS).with_default("auto"),
    "dist_timeout_s": positive().with_default(600, "seconds"),
})
DATA = Entries(DATASETS, ("name", "root", "download", "mirrors", "train_subset", "subset_seed", "test_subset",
                          "val_split", "val_seed", "preprocess", "flip"), {
    "root": TEXT, "download": FLAG, "mirrors": Field("text", nullable=True, items=-1),
    # (their upper bounds, the dataset's sizes, are checked by check_data_sizes; the split's once the
    # subset is drawn)
    "train_subset": Field("subset", nullable=True), "subset_seed": at_least(0, integer=True),
    "test_subset": positive(integer=True, nullable=True),
    "val_split": at_least(0, integer=True), "val_seed": at_least(0, integer=True),
    "preprocess": one_of(*PREPROCESSES.names()), "flip": FLAG,
    "labels": one_of("fine", "coarse"), "extra": FLAG,  # the entries' own fields (cifar100, svhn)
}, null_is_default=False)
_OPTIMIZER_FIELDS = {
    "lr": positive(), "momentum": between(0, 1, high_open=True), "nesterov": FLAG,
    "betas": between(0, 1, high_open=True, items=2), "eps": positive(), "final_lr": positive(), "gamma": positive(),
    "amsbound": FLAG, "ns_steps": positive(integer=True), "adjust_lr_fn": one_of("original", "match_rms_adamw"),
    "ns_coefficients": Field("number", items=3), "normalize_weights": FLAG,
}
# optim.groups: a role's own lr scale (of its optimizer's scheduled lr) and weight decay; null: the default.
_GROUP = Schema({"lr_scale": positive(nullable=True), "weight_decay": Field("number", low=0, nullable=True)},
                nullable=True)
OPTIM = Entries(OPTIMIZERS, OPTIMIZER_COMMON_FIELDS, {
    **_OPTIMIZER_FIELDS, "weight_decay": at_least(0), "norm_bias_lr_scale": positive(),
    "groups": Schema({role: _GROUP for role in ROLES}, nullable=True),
    "auxiliary": Entries(OPTIMIZERS, ("name",), _OPTIMIZER_FIELDS),  # muon's optimizer for the other tensors
})
SCHED = Entries(SCHEDULES, ("name", "warmup"), {
    "warmup": between(0, 1, high_open=True), "milestones": between(0, 1, items=-1), "gamma": positive(),
    "every": between(0, 1, low_open=True), "final": at_least(0), "peak": FRACTION, "initial": at_least(0),
    "k": at_least(0),
})
AUG = Entries(AUGMENTS, (*COMMON, *mix_fields()), {  # (flip, pad_mode: the builders' Literal[...])
    "mix": one_of(*MIXES.names(), nullable=True), "per_epoch": FLAG, "mix_alpha": positive(), "max_shift": at_least(0, integer=True),
    "size": positive(integer=True), "rotation": between(0, 180), "width_shift": FRACTION, "height_shift": FRACTION,
    "shear": between(0, 90), "zoom": between(0, 1, high_open=True), "channel_shift": between(0, 255),
    "horizontal_flip": FLAG, "mix_cutmix_alpha": positive(), "mix_switch_prob": FRACTION,
    "probability": FRACTION, "scale": value_range(0, 1, low_open=True), "ratio": value_range(0, None, low_open=True),
}, supplied=SUPPLIED)
MODEL = Entries(MODELS, ("name", *COMMON_FIELDS), {  # a family's own fields are checked by its builder
    "norm_momentum": FRACTION, "norm_eps": positive(), "norm_weight": FLAG, "dirac_init": FLAG,
    "logit_scale": positive(), "head_std": positive(nullable=True),  # (speednet's)
}, supplied=("num_classes", "in_channels", "image_size"))
# What a reproduced study published for a variant (studies.py's table; null for everything else).
NOTE = Field("text", nullable=True)
REPORTED = Schema({
    "study": NOTE, "variant": NOTE, "test_acc": between(0, 1, nullable=True),
    "seconds_per_epoch": positive(nullable=True),
    "epochs": positive(nullable=True), "train_seconds": positive(nullable=True), "hardware": NOTE, "note": NOTE,
}, nullable=True)
LOGGER = Schema({  # each tracker a sub-group of its own, present when chosen (logger=[csv,mlflow])
    "csv": Schema({}), "tensorboard": Schema({}),
    "mlflow": Schema({"tracking_uri": Field("text", nullable=True), "experiment_name": Field("text", nullable=True),
                      "timeout_s": positive(), "system_metrics": FLAG, "system_metrics_interval_s": positive()}),
    "wandb": Schema({"project": Field("text", nullable=True), "entity": Field("text", nullable=True),
                     "mode": one_of(*WANDB_MODES, nullable=True)}),
})
PATHS = Schema({"output_dir": TEXT, "data_dir": TEXT, "mlflow_uri": TEXT})  # read by interpolation elsewhere
GROUPS = {"data": DATA, "model": MODEL, "optim": OPTIM, "sched": SCHED, "aug": AUG, "trainer": TRAINER,
          "logger": LOGGER, "paths": PATHS, "reported": REPORTED}

# Above these learning rates an optimizer usually diverges (a warning, not an error).
USUAL_MAX_LR = {"sgd": 10.0, "muon": 10.0, "adam": 0.1, "adamw": 0.1, "adabound": 0.1, "amsbound": 0.1}


def check_data_sizes(data: DictConfig):
    """data.train_subset and data.test_subset within the chosen dataset's sizes (ConfigError otherwise)."""
    source = dataset_source(data)
    for key, subset, size, split in (("train_subset", data.train_subset, source.sizes[0], "training"),
                                     ("test_subset", data.test_subset, source.sizes[1], "test")):
        if isinstance(subset, int) and subset > size:
            raise ConfigError(f"data.{key}={subset}; {source.title} has {size} {split} images (use at most {size}"
                              f"{', a fraction in (0, 1)' if key == 'train_subset' else ''} or null)")


def train_size(data: DictConfig) -> int:
    """How many training images a run of this data config uses, before any validation split."""
    return subset_size(data.train_subset, dataset_source(data).sizes[0])


def check_batches(cfg: DictConfig, world_size: int = 1):
    """The batches and shares the data will make, from the dataset's sizes (nothing is loaded): the
    global batch divides among the processes, drop_last leaves a full batch, the validation split
    leaves training images, and every process evaluates at least one image. Raises ConfigError."""
    t, data = cfg.trainer, cfg.data
    if t.batch_size % world_size:
        raise ConfigError(f"trainer.batch_size={t.batch_size} is the global batch: it must divide evenly among the "
                          f"{world_size} processes (WORLD_SIZE={world_size}); use a multiple of {world_size}")
    images = train_size(data)
    if data.val_split >= images:
        raise ConfigError(f"data.val_split={data.val_split}; it must be an integer in 0..{images - 1} (the held-out "
                          f"part of the {images} training images, data.train_subset included)")
    test = min(data.test_subset or math.inf, dataset_source(data).sizes[1])
    check_shares(t, images - data.val_split, [test, data.val_split or math.inf], world_size)


def check_shares(trainer: DictConfig, train_images: int, evaluation_images: list[int], world_size: int = 1):
    """drop_last leaves a full batch of the `train_images`, and each of `world_size` processes evaluates at
    least one image of each evaluation set. `check_batches` calls it with the dataset's official sizes
    before any data loads; the engine again with the sizes loaded (files may hold fewer images). Raises
    ConfigError."""
    batch = trainer.batch_size * trainer.accumulate  # the images of one optimizer step
    if trainer.drop_last and batch > train_images:
        accumulated = f" × trainer.accumulate={trainer.accumulate}" if trainer.accumulate > 1 else ""
        raise ConfigError(f"trainer.batch_size={trainer.batch_size}{accumulated} with trainer.drop_last=true: "
                          f"{train_images} training images make no full batch; lower the batch size"
                          f"{' or accumulate' if accumulated else ''} or set trainer.drop_last=false")
    if min(evaluation_images) < world_size:
        raise ConfigError(f"{min(evaluation_images)} evaluation images for {world_size} processes: each evaluates "
                          f"a share; raise data.test_subset (or data.val_split)")


def check_model(cfg: DictConfig):
    """Build the model on the meta device (shapes only: no memory, no weights) for the dataset's input
    shape and classes, so a value its builder refuses (`model.depth=21` for resnet_cifar, an input too
    small for the network) stops the run before any data loads. Raises ConfigError."""
    source = dataset_source(cfg.data)
    try:
        with torch.device("meta"):
            build_model(cfg.model, len(source.classes), source.shape)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model {cfg.model.name!r} cannot be built from this config: {e}") from e


def warnings_for(cfg: DictConfig) -> list[str]:
    """Legal values that are probably mistakes, each with the reason."""
    found = []
    images = train_size(cfg.data)
    t = cfg.trainer
    if t.batch_size * t.accumulate > images:
        named = f"trainer.batch_size={t.batch_size}" + (f" × trainer.accumulate={t.accumulate}" if t.accumulate > 1 else "")
        found.append(f"{named} is larger than the {images} training images: every epoch is a single smaller batch")
    if cfg.trainer.tta != "none" and not cfg.data.flip:
        found.append(f"trainer.tta={cfg.trainer.tta} averages mirrored views, but data.flip=false says a mirrored "
                     f"{cfg.data.name} image may change its label; trainer.tta=none is likely better")
    usual = USUAL_MAX_LR.get(cfg.optim.name)
    if usual is not None and cfg.optim.lr > usual:
        found.append(f"optim.lr={cfg.optim.lr} is above {usual:g}, where {cfg.optim.name} usually diverges")
    return found


def validate_config(cfg: DictConfig, world_size: int = 1):
    """Check every field of every group (see the module's docstring), the batches the data will make for
    `world_size` processes and the model's own values, before any data loads; raises ConfigError, logs
    warnings."""
    unknown = [k for k in cfg if k not in GROUPS]
    if unknown:
        named = ", ".join(f"{k}{did_you_mean(k, GROUPS)}" for k in unknown)
        raise ConfigError(f"unknown top-level key(s) {named}; the config has {', '.join(GROUPS)}")
    for group, schema in GROUPS.items():
        schema.check(group, cfg.get(group))
    check_data_sizes(cfg.data)
    check_batches(cfg, world_size)
    check_model(cfg)
    device = resolve_device(cfg.trainer.device)
    check_precision(cfg.trainer.precision, resolve_amp(cfg.trainer.amp, device), cfg.trainer.amp, device)
    check_installed(cfg.logger)
    for warning in warnings_for(cfg):
        log.warning("%s", warning)
