"""Config checks: every field declared once, each bad value named in one line, all before any data loads."""
import json
from pathlib import Path

import pytest
from helpers import cli_in_process

from cifarbench.core.registry import ConfigError
from cifarbench.validate import field_of, validate_config


@pytest.mark.parametrize("override, message", [
    ("trainer.batch_size=0", "trainer.batch_size=0; it must be a positive integer"),
    ("trainer.batch_size=-8", "trainer.batch_size=-8; it must be a positive integer"),
    ("trainer.epochs=0", "trainer.epochs=0; it must be a positive number"),
    ("trainer.budget_min=-1", "trainer.budget_min=-1; it must be a positive number or null"),
    ("optim.lr=0", "optim.lr=0; it must be a positive number"),
    ("trainer.device=tpu", "trainer.device='tpu'; it must be one of auto, cpu, cuda"),
    ("trainer.amp=fp8", "trainer.amp='fp8'; it must be one of auto, bf16, fp16, off"),
    ("data.train_subset=60000", "data.train_subset=60000; CIFAR-10 has 50000 training images (use at most 50000, a "
                                "fraction in (0, 1) or null)"),
    ("+trainer.epoch=3", "trainer has no field(s) epoch (did you mean epochs?); its fields are: epochs, batch_size,"),
    ("+data.subset=3", "data 'cifar10' has no field(s) subset (did you mean subset_seed?); its fields are: name, root, "
                       "download, mirrors, train_subset, subset_seed, test_subset, val_split, val_seed, preprocess, flip"),
    ("+trainer.lookahead.evry=5", "trainer.lookahead has no field(s) evry (did you mean every?); its fields are: "
                                  "every, decay, decay_power"),
    ("+lr=0.1", "unknown top-level key(s) lr; the config has data, model, optim, sched, aug, trainer, logger"),
    ("+optim.learning_rate=0.1", "optim 'sgd' has no field(s) learning_rate (did you mean lr?); its fields are: "
                                 "name, weight_decay, norm_bias_lr_scale, groups, lr, momentum, nesterov"),
    ("+model.depth=3", "model 'lenet' has no field(s) depth (did you mean width?); its fields are: name, "
                       "norm_momentum, norm_eps, norm_weight, dirac_init, channels, hidden,"),
    ("+aug.pad=reflect", "aug 'flip_shift' has no field(s) pad (did you mean pad_mode?); its fields are: name, mix, "
                         "per_epoch, mix_alpha, mix_cutmix_alpha, mix_switch_prob, max_shift, flip, pad_mode"),
    ("optim=muon +optim.auxiliary.weight_decay=0.1", "optim.auxiliary 'sgd' has no field(s) weight_decay; its fields "
                                                     "are: name, lr, momentum, nesterov"),
    # every group's numeric and enum fields, declared once in validate.py
    ("aug=mixup aug.mix_alpha=-1", "aug.mix_alpha=-1; it must be a positive number"),
    ("aug.max_shift=-1", "aug.max_shift=-1; it must be an integer >= 0"),
    ("aug.max_shift=1.5", "aug.max_shift=1.5; it must be an integer >= 0"),
    ("aug.flip=sometimes", "aug.flip='sometimes'; it must be one of true, false, alternating"),
    ("aug.pad_mode=wrap", "aug.pad_mode='wrap'; it must be one of zeros, reflect, edge"),
    ("aug.mix=cutmixup", "aug.mix='cutmixup'; it must be one of bc, cutmix, mixup, mixup_cutmix or null"),
    ("trainer.clip_grad=0", "trainer.clip_grad=0; it must be a positive number or null"),
    ("trainer.clip_mode=agc", "trainer.clip_mode='agc'; it must be one of norm, value"),
    ("trainer.accumulate=0", "trainer.accumulate=0; it must be a positive integer"),
    ("trainer.accumulate=1.5", "trainer.accumulate=1.5; it must be a positive integer"),
    ("data.train_subset=200 trainer.batch_size=128 trainer.accumulate=2 trainer.drop_last=true",
     "trainer.batch_size=128 × trainer.accumulate=2 with trainer.drop_last=true: 200 training images make no full "
     "batch; lower the batch size or accumulate or set trainer.drop_last=false"),
    ("aug=cutout aug.size=0", "aug.size=0; it must be a positive integer"),
    ("aug=keras aug.width_shift=1.5", "aug.width_shift=1.5; it must be a number in [0, 1]"),
    ("aug=keras aug.horizontal_flip=maybe", "aug.horizontal_flip='maybe'; it must be true or false"),
    ("optim.momentum=1", "optim.momentum=1; it must be a number in [0, 1)"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1; it must be a number >= 0"),
    ("optim.nesterov=yes", "optim.nesterov='yes'; it must be true or false"),
    ("optim=adam optim.betas=[0.9,1.0]", "optim.betas=[0.9, 1.0]; it must be a list of 2 values, each a number in "
                                         "[0, 1)"),
    ("optim=adam optim.betas=[0.9]", "optim.betas=[0.9]; it must be a list of 2 values, each a number in [0, 1)"),
    ("optim=adamw optim.eps=0", "optim.eps=0; it must be a positive number"),
    ("optim=adabound optim.final_lr=-1", "optim.final_lr=-1; it must be a positive number"),
    ("optim=muon optim.ns_steps=0", "optim.ns_steps=0; it must be a positive integer"),
    ("optim=muon optim.auxiliary.lr=-1", "optim.auxiliary.lr=-1; it must be a positive number"),
    ("optim=muon optim.adjust_lr_fn=fast", "optim.adjust_lr_fn='fast'; it must be one of original, match_rms_adamw"),
    ("optim=muon optim.ns_coefficients=[3.4,-4.7]", "optim.ns_coefficients=[3.4, -4.7]; it must be a list of 3 "
                                                    "values, each a number"),
    ("+optim.groups.heads.lr_scale=2", "optim.groups has no field(s) heads (did you mean head?); its fields are: "
                                       "input, hidden, head, bias, norm_weight, norm_bias"),
    ("+optim.groups.head.lr_scale=0", "optim.groups.head.lr_scale=0; it must be a positive number or null"),
    ("trainer.compile_mode=fast", "trainer.compile_mode='fast'; it must be one of default, reduce-overhead, "
                                  "max-autotune, max-autotune-no-cudagraphs"),
    ("trainer.precision=fp8", "trainer.precision='fp8'; it must be one of autocast, half"),
    ("trainer.precision=half trainer.amp=off trainer.device=cpu",
     "trainer.precision=half needs a half dtype, but trainer.amp=off means fp32 on cpu; set trainer.amp=bf16 (or fp16 "
     "on CUDA)"),
    ("sched=step sched.gamma=0", "sched.gamma=0; it must be a positive number"),
    ("sched=step sched.every=0", "sched.every=0; it must be a number in (0, 1]"),
    ("sched=multistep sched.milestones=[0.5,2]", "sched.milestones=[0.5, 2]; it must be a list of values, each a "
                                                 "number in [0, 1]"),
    ("sched=onecycle sched.peak=1.5", "sched.peak=1.5; it must be a number in [0, 1]"),
    ("sched.warmup=1", "sched.warmup=1; it must be a number in [0, 1)"),
    ("model=speednet model.norm_momentum=2", "model.norm_momentum=2; it must be a number in [0, 1]"),
    ("model=speednet model.norm_eps=0", "model.norm_eps=0; it must be a positive number"),
    ("trainer.lookahead.every=2.5", "trainer.lookahead.every=2.5; it must be a positive integer or null"),
    ("trainer.lookahead.decay=2", "trainer.lookahead.decay=2; it must be a number in [0, 1]"),
    ("trainer.ema=1", "trainer.ema=1; it must be a number in [0, 1) or null"),
    ("trainer.seed=x", "trainer.seed='x'; it must be an integer"),
    ("trainer.tta=all", "trainer.tta='all'; it must be one of none, flip, flip_translate"),
    ("data.preprocess=pca", "data.preprocess='pca'; it must be one of "),
    ("logger=mlflow logger.mlflow.tracking_uri=5", "logger.mlflow.tracking_uri=5; it must be a string or null"),
    ("+logger.comet={}", "logger has no field(s) comet; its fields are: csv, tensorboard, mlflow, wandb"),
    ("logger=wandb logger.wandb.mode=sync", "logger.wandb.mode='sync'; it must be one of online, offline, disabled or null"),
    ("paths.output_dir=5", "paths.output_dir=5; it must be a string"),
    ("+paths.log_dir=logs", "; its fields are: output_dir, data_dir, mlflow_uri"),
])
def test_each_bad_value_is_named(compose_with, override, message):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_with(*override.split()))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_field_of_every_group_is_declared_once():
    """The YAML fields of trainer are exactly its schema (data's entries: tests/data/test_datasets.py); every
    field a builder of optim, sched or aug takes has a declaration (or a Literal[...] annotation), so a new
    entry's field cannot go unchecked."""
    from omegaconf import OmegaConf

    from cifarbench.validate import AUG, OPTIM, SCHED, TRAINER

    conf = Path(__file__).resolve().parents[2] / "conf"
    assert list(OmegaConf.load(conf / "trainer" / "default.yaml")) == list(TRAINER.fields)
    for entries in (OPTIM, SCHED, AUG):
        for name in entries.registry.names():
            typed = {k for k, hint in entries.registry.annotations(name).items() if field_of(hint) is not None}
            undeclared = set(entries.fields(name)) - set(entries.table) - typed - {"name"}
            assert not undeclared, (entries.registry.kind, name, undeclared)


def test_the_trainer_yaml_holds_the_defaults_its_schema_declares():
    """conf/trainer/default.yaml is validate.TRAINER's table: the same fields in the same order, each with the
    default declared beside its type (lookahead's too), and every default passes its own check."""

    from omegaconf import OmegaConf

    from cifarbench.validate import TRAINER, Schema

    def defaults(schema: Schema, prefix: str = "trainer") -> dict:
        table = {}
        for key, field in schema.fields.items():
            if isinstance(field, Schema):
                table[key] = defaults(field, f"{prefix}.{key}")
            else:
                field.check(f"{prefix}.{key}", field.default)
                table[key] = field.default
        return table

    yaml = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "trainer" /
                                                 "default.yaml"))
    assert yaml == defaults(TRAINER)
    assert json.dumps(yaml) == json.dumps(defaults(TRAINER)), "the same order and types (20, not 20.0)"


@pytest.mark.parametrize("overrides, warning", [
    (("trainer.batch_size=512", "data.train_subset=300"),
     "trainer.batch_size=512 is larger than the 300 training images: every epoch is a single smaller batch"),
    (("optim.lr=20",), "optim.lr=20 is above 10, where sgd usually diverges"),
    (("optim=adam", "optim.lr=0.5"), "optim.lr=0.5 is above 0.1, where adam usually diverges"),
])
def test_questionable_values_warn_with_the_reason(compose_with, caplog, overrides, warning):
    validate_config(compose_with(*overrides))
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]


def test_cuda_and_fp16_need_a_gpu(compose_with):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="trainer.device=cuda but PyTorch sees no CUDA GPU"):
        validate_config(compose_with("trainer.device=cuda"))
    with pytest.raises(ConfigError, match="trainer.amp=fp16 needs a CUDA device"):
        validate_config(compose_with("trainer.amp=fp16"))


def test_validation_happens_before_data_is_loaded(tmp_path, monkeypatch, capsys):
    """No dataset anywhere and download off: the config error still comes first."""
    assert cli_in_process(monkeypatch, "trainer.batch_size=0", "data.download=false", f"data.root={tmp_path / 'none'}",
                          f"hydra.run.dir={tmp_path / 'run'}") == 2
    output = "".join(capsys.readouterr())
    assert "trainer.batch_size=0" in output and "CIFAR-10 not found" not in output


@pytest.mark.parametrize("overrides, message", [
    # Seen: a model's own value raised ValueError after the data loaded, a traceback.
    (("model=lenet", "model.kernel=7x7"), "model.kernel='7x7'; it must be one of 5x5, 3x3, 3x1"),
    (("model=resnet18", "model.stem=keras"), "model.stem='keras'; it must be one of cifar, imagenet"),
    (("model=resnet_cifar", "model.depth=21"), "model.depth=21; it must be 6n+2 (20, 32, 44, 56, 74, 110, ...)"),
    (("model=resnet74", "model.stochastic_depth=1.5"), "model.stochastic_depth=1.5; it must be in [0, 1)"),
    # Seen (a new user): "cannot be built from this config: '<' not supported between 'str' and 'int'".
    (("model=resnet_cifar", "model.depth=twenty"), "model.depth='twenty'; it must be an integer"),
    (("model=lenet", "model.bn=yes"), "model.bn='yes'; it must be true or false"),
    (("model=speednet", "model.whiten_width=2.5"), "model.whiten_width=2.5; it must be an integer"),
    # Seen: these two fired after the data had loaded.
    (("trainer.batch_size=60000", "trainer.drop_last=true"),
     "trainer.batch_size=60000 with trainer.drop_last=true: 50000 training images make no full batch"),
    (("trainer.batch_size=4000", "trainer.drop_last=true", "data.train_subset=5000", "data.val_split=1001"),
     "trainer.batch_size=4000 with trainer.drop_last=true: 3999 training images make no full batch"),
])
def test_a_bad_value_found_only_by_building_stops_in_one_line_before_any_data_loads(tmp_path, monkeypatch, capsys,
                                                                                    overrides, message):
    """On a data.root holding no data (and download off), the error names the config key, not the files."""
    assert cli_in_process(monkeypatch, *overrides, "data.download=false", f"data.root={tmp_path / 'none'}",
                          f"hydra.run.dir={tmp_path / 'run'}") == 2
    output = "".join(capsys.readouterr())
    assert "Traceback" not in output and "not found" not in output
    errors = [line.split("] - ")[-1] for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].startswith(message)
    assert not (tmp_path / "run" / "summary.json").exists()  # a command refused is no run (issue 26)


def test_fewer_evaluation_images_than_processes_is_named_before_any_data_loads(compose_with):
    """Seen: raised after the data had loaded. Each process evaluates a share of every evaluation set."""
    with pytest.raises(ConfigError, match=r"^3 evaluation images for 4 processes: each evaluates a share; raise "
                                          r"data.test_subset \(or data.val_split\)$"):
        validate_config(compose_with("data.test_subset=3"), world_size=4)
    with pytest.raises(ConfigError, match=r"^2 evaluation images for 4 processes"):
        validate_config(compose_with("data.val_split=2"), world_size=4)
    validate_config(compose_with("data.test_subset=4", "data.val_split=4"), world_size=4)
    with pytest.raises(ConfigError, match=r"^trainer.batch_size=130 is the global batch: it must divide evenly among "
                                          r"the 4 processes"):
        validate_config(compose_with("trainer.batch_size=130"), world_size=4)
