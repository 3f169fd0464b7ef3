"""The real CLI, end to end, on a small synthetic CIFAR-10 in the official format."""
import ast
import csv
import json
from pathlib import Path

import pytest
from helpers import cli_in_process, run_cli
from omegaconf import OmegaConf
from PIL import Image

QUICK = ("trainer.epochs=1", "trainer.batch_size=32", "trainer.eval_batch_size=100", "trainer.progress=false")


def test_one_epoch_writes_metrics_curves_and_summary(tmp_path, fake_cifar_root):
    result = run_cli(*QUICK, "trainer.epochs=2", f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "step", "train_seconds", "lr", "train_loss", "train_acc", "test_loss",
                             "test_acc", "images_per_s", "val_loss", "val_acc", "grad_norm", "max_memory_allocated_mib",
                             "max_memory_reserved_mib", "max_rss_mib", "gpu_utilization", "gpu_power_w"]
    assert {(r["val_loss"], r["val_acc"], r["grad_norm"]) for r in rows} == {("", "", "")}  # no split, no clipping
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0]
    summary = json.loads((run / "summary.json").read_text())
    last = rows[-1]
    assert summary["status"] == "completed" and summary["stopped_by"] == "epochs"
    assert summary["final_test_acc"] == pytest.approx(float(last["test_acc"]))
    assert summary["best_test_acc"] == pytest.approx(max(float(r["test_acc"]) for r in rows))
    assert summary["selection"] == {"best_checkpoint": "test_acc", "objective": "final_test_acc"}
    assert "final_val_acc" not in summary
    assert summary["epochs"] == pytest.approx(float(last["epoch"]))
    assert summary["train_seconds"] == pytest.approx(float(last["train_seconds"]), abs=1e-3)
    assert summary["steps"] == int(last["step"]) == 2 * 7  # 200 images at batch 32: 6 full + 1 remainder
    assert summary["params"] == 1_632_080 and summary["device"].startswith("cpu")
    assert summary["config"]["model"]["name"] == "lenet" and summary["config"]["trainer"]["epochs"] == 2
    assert summary["command"].startswith("python -m cifarbench ") and "trainer.epochs=2" in summary["command"]
    assert set(summary["git"]) == {"revision", "dirty"}
    assert 0 <= summary["final_test_acc"] <= 1
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    with Image.open(run / "curves.png") as image:
        assert image.size[0] > 300 and image.size[1] > 200
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    log = result.stdout + result.stderr  # the run folder, at the start and at the end
    assert f"- run folder: {run}\n" in log and f"- run folder: {run} (the run's files)\n" in log


def test_budget_stops_training_and_still_evaluates(tmp_path, fake_cifar_root, compose_with):
    from cifarbench.engine.loop import train

    summary = train(compose_with(*QUICK, "trainer.epochs=1000", "trainer.budget_min=0.02",
                                 f"data.root={fake_cifar_root}"), tmp_path)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_by"] == "budget"
    assert 0 < summary["epochs"] < 1000 and summary["train_seconds"] >= 0.02 * 60
    assert summary["final_test_acc"] is not None


def test_unknown_model_lists_the_available_ones(tmp_path):
    result = run_cli("model=no_such_net", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "no_such_net" in result.stderr and "lenet" in result.stderr


def test_unknown_model_field_is_named(tmp_path, fake_cifar_root, monkeypatch, capsys):
    assert cli_in_process(monkeypatch, *QUICK, "+model.depth=3", f"data.root={fake_cifar_root}",
                          f"hydra.run.dir={tmp_path}") == 2
    assert "model 'lenet' has no field(s) depth" in "".join(capsys.readouterr())


def test_missing_dataset_offline_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    assert cli_in_process(monkeypatch, "data.download=false", f"data.root={tmp_path / 'empty'}",
                          f"hydra.run.dir={tmp_path / 'run'}") == 2
    output = "".join(capsys.readouterr())
    assert "CIFAR-10 not found" in output and "cifar-10-python.tar.gz" in output
    assert "Traceback" not in output


CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("optim", "sched", "aug")


def group_entries(group: str) -> list[str]:
    """The entries of a config group: its YAML files (one whose name starts with `_` would be a base)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def registry_rows() -> list[tuple[str, ...]]:
    """Overrides that together use every entry of every group and every preprocessing at least once
    (row i takes entry i of each, wrapping around), so a new entry is trained the day it is added."""
    from cifarbench.data import PREPROCESSES

    entries = {group: group_entries(group) for group in GROUPS}
    entries["data.preprocess"] = PREPROCESSES.names()
    rows = max(len(e) for e in entries.values())
    return [tuple(f"{group}={names[i % len(names)]}" for group, names in entries.items()) for i in range(rows)]


def entry_name(path: Path) -> str | None:
    """The registered name a config builds: its own `name:`, else that of the first config its defaults
    list extends (aug's bc and mixup extend flip_shift; a base, conf/_data.yaml, leaves `name: ???`)."""
    cfg = OmegaConf.load(path)
    if "name" in cfg and not OmegaConf.is_missing(cfg, "name"):
        return cfg.name
    base = next((d for d in cfg.get("defaults", []) if isinstance(d, str) and d != "_self_"), None)
    if base is None:
        return None
    return entry_name(CONF / f"{base[1:]}.yaml" if base.startswith("/") else path.parent / f"{base}.yaml")


def test_every_registered_entry_has_a_config_and_every_config_a_registered_entry():
    from cifarbench.aug import AUGMENTS
    from cifarbench.data import DATASETS
    from cifarbench.models import MODELS
    from cifarbench.optim import OPTIMIZERS
    from cifarbench.sched import SCHEDULES

    for group, registry in (("data", DATASETS), ("model", MODELS), ("optim", OPTIMIZERS), ("sched", SCHEDULES),
                            ("aug", AUGMENTS)):
        names = {entry: entry_name(CONF / group / f"{entry}.yaml") for entry in group_entries(group)}
        # each registered entry is chosen by its own name (model=resnet18 builds resnet18) ...
        assert {name: names.get(name) for name in registry.names()} == {n: n for n in registry.names()}, group
        # ... and each config builds a registered entry (aug=bc: flip_shift with BC mixing)
        unregistered = {entry: name for entry, name in names.items() if name not in registry.names()}
        assert not unregistered, (group, unregistered)


@pytest.mark.parametrize("overrides", registry_rows(), ids=lambda o: ",".join(v.split("=")[1] for v in o))
def test_every_group_entry_trains(tmp_path, shared_fake_root, compose_with, overrides):
    from cifarbench.engine.loop import train

    cfg = compose_with(*QUICK, *overrides, "model=lenet5", "trainer.plots=none", f"data.root={shared_fake_root}")
    summary = train(cfg, tmp_path)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "nan" not in rows[1]
    assert summary["status"] == "completed"
    assert [summary["optim"], summary["config"]["sched"]["name"], summary["config"]["data"]["preprocess"]] == [
        cfg.optim.name, cfg.sched.name, cfg.data.preprocess]


# The CLI explains itself ----------------------------------------------------------------------------
def cli_main(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """`cifarbench argv...` in-process: (exit status, stdout, stderr)."""
    code = cli_in_process(monkeypatch, *argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands_the_common_overrides_and_where_outputs_go(monkeypatch, capsys):
    code, out, _ = cli_main(monkeypatch, capsys, "--help")
    assert code == 0
    assert out.startswith("usage: cifarbench COMMAND [--help | ARGS...]\n")
    for line in ("  models    list the models: parameters, MACs, the study (docs/studies.md) each reproduces",
                 "  report    leaderboard and comparison plots of a folder of runs",
                 "  predict   classify image files, folders or glob patterns with a checkpoint",
                 "  inspect   confusion matrix, sample predictions and per-class accuracy of a checkpoint",
                 "outputs, relative to the current folder:",
                 "  outputs/runs/<date>/<time>_<model>_<optim>_<run id>/     one run (printed at its start and end)",
                 "  -m optim=sgd,adam model=lenet,resnet18                   a sweep: one job per combination"):
        assert line + "\n" in out
    assert "cifarbench is powered by Hydra." in out and "optim: adabound, adam, adamw, amsbound, muon, sgd" in out


@pytest.mark.parametrize("command", ["models", "report", "predict", "inspect"])
def test_each_command_has_help(monkeypatch, capsys, command):
    code, out, _ = cli_main(monkeypatch, capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: cifarbench {command}")


@pytest.mark.parametrize("word, message", [
    ("reprot", "cifarbench: unknown command 'reprot' (did you mean report?); commands: models, report, predict, "
               "inspect, plan (or none, to train; cifarbench --help)\n"),
    ("train", "cifarbench: unknown command 'train'; commands: models, report, predict, inspect, plan (or none, to "
              "train; cifarbench --help)\n"),
])
def test_an_unknown_command_lists_the_commands(monkeypatch, capsys, word, message):
    assert cli_main(monkeypatch, capsys, word, "model=lenet") == (2, "", message)


def test_only_a_bare_first_word_is_a_command():
    from cifarbench.commands.cli import is_command

    assert is_command("reprot") and is_command("models")
    assert not any(map(is_command, ["model=vgg", "-m", "--cfg", "+model.depth=3", "~trainer.ema", "-sc"]))


@pytest.mark.parametrize("overrides, message", [
    (["model=no_such_net"], "error: Could not find 'model/no_such_net'; available: alexnet, chainer_cnn, "),
    (["optim=sgdd"], "error: Could not find 'optim/sgdd' (did you mean sgd?); available: adabound, adam, adamw, "
                     "amsbound, muon, sgd\n"),
    (["optim.learning_rate=3"], "error: optim 'sgd' has no field(s) learning_rate (did you mean lr?); its fields are: "
                                "name, lr, momentum, nesterov, weight_decay, norm_bias_lr_scale (to add a new field: "
                                "+optim.learning_rate=VALUE)\n"),
    (["trainer.epochs=["], "error: cannot parse the override 'trainer.epochs=[': no viable alternative at input '['"),
    # Seen (a new user): Hydra's own advice for these two misleads ("use 'override debug: quick'", "+study/...").
    (["+debug=quick"], "error: debug is in the root defaults list already: write debug=quick, without '+'\n"),
    (["study/tenminute=lenet"], "error: study/tenminute is not an option on its own: a study's variants are chosen "
                                "inside its experiment, experiment=tenminute study/tenminute=lenet\n"),
])
def test_a_config_that_does_not_compose_is_one_line_and_exit_2(monkeypatch, capsys, overrides, message):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, out, err = cli_main(monkeypatch, capsys, *overrides)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1


def test_hydra_full_error_still_raises_with_the_traceback(monkeypatch, capsys):
    from hydra.errors import ConfigCompositionException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException, match="Could not override 'optim.learning_rate'"):
        cli_main(monkeypatch, capsys, "optim.learning_rate=3")


def test_a_bad_checkpoint_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    code, out, err = cli_main(monkeypatch, capsys, "predict", f"ckpt={tmp_path / 'garbage.pt'}",
                              f"images={tmp_path}")
    assert code == 2 and err == (f"error: {tmp_path / 'garbage.pt'} is not a readable checkpoint (torch.save "
                                 "writes a zip archive; this file is not one)\n")
    assert err.count("\n") == 1


def test_bash_completion_completes_groups_and_fields():
    result = run_cli("-sc", "query=bash", env={"COMP_LINE": "cifarbench optim=a", "COMP_POINT": "19"})
    assert result.returncode == 0 and result.stdout.split() == ["optim=adabound", "optim=adam", "optim=adamw",
                                                                "optim=amsbound"]


# The README's CLI and "Adding a model" sections are what the code does -----------------------------
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_section(heading: str) -> str:
    """From `heading` to the next heading of level 2 or 3 (code comments start with "# ")."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    ends = [i for i in (text.find("\n## ", start), text.find("\n### ", start)) if i >= 0]
    return text[start:min(ends, default=len(text))]


def fenced(section: str, language: str) -> str:
    """The first ```language block of `section`."""
    start = section.index(f"```{language}\n") + len(language) + 4
    return section[start:section.index("```", start)]


def test_readme_command_line_section_is_the_help_text():
    from cifarbench.commands.cli import usage

    assert fenced(readme_section("## Command line"), "text") == usage().rstrip("\n") + "\n"


def test_readme_adding_a_model_example_registers_composes_and_trains(tmp_path, fake_cifar_root, compose_with,
                                                                    monkeypatch):
    from omegaconf import open_dict

    from cifarbench.models import MODELS, list_models
    from cifarbench.engine.loop import train

    section = readme_section("### Adding a model")
    source, yaml = fenced(section, "python"), fenced(section, "yaml")
    config = OmegaConf.create(yaml)
    assert source.startswith("# src/cifarbench/models/") and yaml.startswith(f"# conf/model/{config.name}.yaml\n")
    assert "add `tiny` to the imports of `src/cifarbench/models/__init__.py`" in " ".join(section.split())
    # Seen: the example imported MODELS from cifarbench.models, a circle once models/__init__.py imports it.
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert "cifarbench.models.registry" in imported and "cifarbench.models" not in imported
    monkeypatch.setattr(MODELS, "_builders", dict(MODELS._builders))  # the example's registration ends here
    monkeypatch.setattr(MODELS, "info", dict(MODELS.info))
    exec(compile(source, "README.md: Adding a model", "exec"), {})
    assert config.name in list_models()
    cfg = compose_with(*QUICK, "trainer.plots=none", "data.train_subset=32", f"data.root={fake_cifar_root}")
    with open_dict(cfg):
        cfg.model = config
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 1
    assert summary["config"]["model"] == OmegaConf.to_container(config)


def test_a_config_error_raised_inside_training_keeps_its_traceback(monkeypatch, capsys, tmp_path):
    """Only composing the config is the user's doing; an OmegaConf error from inside a job is a bug."""
    from omegaconf.errors import ConfigKeyError

    def buggy_train(cfg, run_dir, on_evaluation=None):
        raise ConfigKeyError("a key the trainer looked up wrongly")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("cifarbench.engine.loop.train", buggy_train)
    with pytest.raises(ConfigKeyError, match="a key the trainer looked up wrongly"):
        cli_main(monkeypatch, capsys, f"hydra.run.dir={tmp_path}")
