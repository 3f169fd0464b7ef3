"""The engine: exact resume from any step, resume decisions, compiling without recompiles,
determinism switches that cost nothing when unchanged, and the loader's position."""
import collections
import functools
import json
import logging
import os
import signal

import pytest
import torch
from helpers import make_fake_cifar, metrics_without_timing
from torch import nn

from cifarbench.engine import build as engine_build
from cifarbench.engine import loop as trainer
from cifarbench.run.checkpoint import load_checkpoint
from cifarbench.data.loader import DeviceLoader
from cifarbench.core.registry import ConfigError

# The module-scoped runs below are shared by its tests: one pytest-xdist worker runs them all.
pytestmark = pytest.mark.xdist_group("test_engine")

# The issue's run: 2000 images in batches of 16 = 125 steps an epoch, 3 epochs, cosine; with LeNet-5 for the
# issue's LeNet (the steps and the resume do not depend on the model, and it trains four times faster).
ISSUE_RUN = ("model=lenet5", "optim=sgd", "sched=cosine", "data.train_subset=2000", "data.test_subset=500",
             "trainer.epochs=3", "trainer.batch_size=16", "trainer.deterministic=true", "trainer.progress=false",
             "trainer.eval_batch_size=500", "data.preprocess=meanstd")


@pytest.fixture(scope="module")
def issue_data(tmp_path_factory):
    return make_fake_cifar(tmp_path_factory.mktemp("data"), n_train=2000, n_test=500)


@pytest.fixture(scope="module")
def uninterrupted(issue_data, compose_with, tmp_path_factory):
    """The issue's run without interruption: (summary, metrics.csv path)."""
    run = tmp_path_factory.mktemp("whole")
    return trainer.train(compose_with(*ISSUE_RUN, f"data.root={issue_data}"), run), run / "metrics.csv"


def interrupt_at(monkeypatch, step: int):
    """Send this process a real SIGINT during training forward number `step` (1-based)."""
    build = engine_build.build_model
    calls = {"n": 0}

    def hook(module, args):
        if module.training:
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGINT)

    def build_with_hook(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(engine_build, "build_model", build_with_hook)


@pytest.mark.parametrize("resume", ["path", "auto"])
def test_ctrl_c_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, issue_data, compose_with,
                                                                  uninterrupted, monkeypatch, resume):
    """Seen: SIGINT at step 163 (epoch 2), then resume: 413 steps and 3.304 epochs (auto: 408), the cosine
    at lr 0 before the end. Right: 375 steps, 3.0 epochs, the uninterrupted run's metrics."""
    whole, whole_metrics = uninterrupted
    assert whole["steps"] == 375 and whole["epochs"] == 3.0

    run = tmp_path / "interrupted"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 163)
        stopped = trainer.train(compose_with(*ISSUE_RUN, f"data.root={issue_data}"), run)
    assert stopped["status"] == "interrupted" and stopped["steps"] == 163
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (checkpoint.loader["epoch"], checkpoint.loader["batch"]) == (2, 38)  # mid-epoch

    target = "auto" if resume == "auto" else run / "checkpoints" / "last.pt"
    resumed = trainer.train(compose_with(*ISSUE_RUN, f"data.root={issue_data}", f"trainer.resume={target}"), run)
    assert resumed["status"] == "completed" and resumed["steps"] == 375 and resumed["epochs"] == 3.0
    assert metrics_without_timing(run / "metrics.csv") == metrics_without_timing(whole_metrics)
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    assert resumed["per_class_acc"] == whole["per_class_acc"]


def test_resume_auto_does_not_resume_a_finished_run_in_its_own_folder(tmp_path, fake_cifar_root, compose_with,
                                                                       caplog):
    """Seen: train wrote status "running" before looking, so a completed run in a fixed folder was
    "resumed" and lost its per_class_acc."""
    overrides = ("trainer.epochs=1", "trainer.batch_size=32", "trainer.progress=false", f"data.root={fake_cifar_root}")
    trainer.train(compose_with(*overrides), tmp_path)
    with caplog.at_level(logging.INFO, logger="cifarbench"):
        again = trainer.train(compose_with(*overrides, "trainer.resume=auto"), tmp_path)
    assert "no unfinished run with this config; starting afresh" in caplog.text
    assert again["status"] == "completed" and again["steps"] == 7 and "per_class_acc" in again


def test_resuming_under_a_config_that_changes_a_step_names_every_difference(tmp_path, fake_cifar_root,
                                                                            compose_with):
    base = ("trainer.epochs=1", "trainer.batch_size=32", "trainer.progress=false", f"data.root={fake_cifar_root}")
    trainer.train(compose_with(*base), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(ConfigError) as error:
        trainer.train(compose_with(*base, "trainer.batch_size=64", "optim.lr=0.05", "model=lenet5",
                                   f"trainer.resume={last}"), tmp_path / "changed")
    message = str(error.value)
    assert message.startswith(f"cannot resume {last}: the config changes what a step means")
    for change in ("trainer.batch_size: 32 → 64", "optim.lr: 0.01 → 0.05", "model.name: 'lenet' → 'lenet5'"):
        assert change in message


def test_raising_epochs_on_resume_replans_the_schedule(tmp_path, fake_cifar_root, compose_with, caplog):
    base = ("trainer.batch_size=32", "trainer.progress=false", "sched=cosine", f"data.root={fake_cifar_root}")
    trainer.train(compose_with(*base, "trainer.epochs=1"), tmp_path)
    with caplog.at_level(logging.INFO, logger="cifarbench"):
        longer = trainer.train(compose_with(*base, "trainer.epochs=3",
                                            f"trainer.resume={tmp_path / 'checkpoints' / 'last.pt'}"), tmp_path)
    assert "trainer.epochs changed from 1 to 3: the schedule is re-planned over 21 steps" in caplog.text
    assert longer["steps"] == 21 and longer["epochs"] == 3.0
    rows = metrics_without_timing(tmp_path / "metrics.csv")
    assert [row["step"] for row in rows] == ["7", "14", "21"]


def test_compiled_run_never_recompiles_and_counts_every_compile_second(tmp_path, compose_with, monkeypatch):
    """Seen: batches 128, 128, 44 recompiled on the short batch inside the timed epoch 1, and after a
    resume the whole compile counted as training. trainer.compile_mode reaches the backend; under
    max-autotune on the CPU (no CUDA graphs) the warm-up runs each graph once; summary.json's
    recompiles_in_loop counts what the loop compiled."""
    root = make_fake_cifar(tmp_path / "data", n_train=300, n_test=100)
    modes, calls = [], collections.Counter()

    def backend(graph, example_inputs, **kwargs):  # a recording stand-in for inductor (no C++ compile)
        modes.append(kwargs.get("mode"))
        index = len(modes)

        def run(*args):
            calls[index] += 1
            return graph.forward(*args)
        return run

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    after_warm_up = []
    warm_up = trainer.warm_up_compiled
    monkeypatch.setattr(trainer, "warm_up_compiled", lambda *a: (warm_up(*a), after_warm_up.append(calls.copy())))
    overrides = ("model=lenet5", "trainer.compile=true", "trainer.compile_mode=max-autotune", "data.train_subset=300",
                 "trainer.batch_size=128", "trainer.epochs=3", "trainer.eval_batch_size=64", "trainer.tta=flip",
                 "trainer.progress=false", "trainer.plots=none", f"data.root={root}")
    summary = trainer.train(compose_with(*overrides), tmp_path / "run")
    # Graphs: training at 128 and 44 images (1 run each: on the CPU no CUDA graphs to record, see
    # test_compile_warm_up_runs_each_graph_3_times_only_on_cuda_under_a_cuda_graph_mode), evaluation (no_grad,
    # eval mode) at 64 and 36 (1 run of 2 flip views each).
    assert modes == ["max-autotune"] * 4 and after_warm_up == [collections.Counter({1: 1, 2: 1, 3: 2, 4: 2})]
    assert summary["steps"] == 9 and summary["compile_seconds"] > 0 and summary["recompiles_in_loop"] == 0

    torch._dynamo.reset()
    first_compile = summary["compile_seconds"]
    resumed = trainer.train(compose_with(*overrides, "trainer.epochs=4",
                                         f"trainer.resume={tmp_path / 'run' / 'checkpoints' / 'last.pt'}"),
                            tmp_path / "run")
    assert len(after_warm_up) == 2 and len(modes) == 8  # the resumed process compiled again, once
    assert resumed["steps"] == 12 and resumed["compile_seconds"] > first_compile

    torch._dynamo.reset()  # a warm-up that compiled nothing leaves all 4 graphs to the loop, and the summary says so
    monkeypatch.setattr(trainer, "warm_up_compiled",
                        lambda training, *a: setattr(training, "graphs_after_warm_up", engine_build.compiled_graphs()))
    cold = trainer.train(compose_with(*overrides, "trainer.epochs=1"), tmp_path / "cold")
    assert cold["recompiles_in_loop"] == 4


def test_determinism_is_switched_only_when_it_changes(monkeypatch):
    """Seen: use_deterministic_algorithms(False) cost 1.8 s on its first call though it changed nothing."""
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: False)
    engine_build.configure_determinism(False, torch.device("cpu"))
    assert calls == []
    engine_build.configure_determinism(True, torch.device("cpu"))
    assert calls == [(True,)]


@pytest.mark.parametrize("drop_last", [False, True])
def test_a_loader_restored_mid_epoch_yields_what_the_original_would_have(drop_last):
    from cifarbench.aug import flip_shift

    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    make = functools.partial(DeviceLoader, images, torch.arange(50), 16, nn.Identity(),
                             flip_shift(2, "alternating", num_images=50, seed=3), seed=3, drop_last=drop_last)
    whole, stopped = make(), make()
    expected = [batch for _ in range(3) for batch in whole]
    assert len(whole) == (3 if drop_last else 4)
    taken = []
    for batch in stopped:  # epoch 1, then two batches of epoch 2
        taken.append(batch)
    for batch in stopped:
        taken.append(batch)
        if len(taken) == len(whole) + 2:
            break
    state = stopped.state_dict()
    restored = make()
    restored.load_state_dict(state)
    rest = [batch for batch in restored] + [batch for batch in restored]
    for (a, la), (b, lb) in zip(expected, taken + rest, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_drop_last_larger_than_the_data_is_a_config_error(tmp_path, fake_cifar_root, compose_with):
    with pytest.raises(ConfigError, match="trainer.batch_size=512 with trainer.drop_last=true: 200 training images "
                                          "make no full batch"):
        trainer.train(compose_with("trainer.batch_size=512", "trainer.drop_last=true",
                                   f"data.root={fake_cifar_root}"), tmp_path)


def test_fractional_epochs_and_drop_last_plan_the_steps(tmp_path, fake_cifar_root, compose_with):
    """airbench94's 9.9 epochs of 48 full batches are ceil(475.2) = 476 steps; here 200 images in batches
    of 32 with drop_last are 6 an epoch, and 2.5 epochs are 15 steps."""
    summary = trainer.train(compose_with("trainer.batch_size=32", "trainer.drop_last=true", "trainer.epochs=2.5",
                                         "trainer.progress=false", f"data.root={fake_cifar_root}"), tmp_path)
    assert summary["steps"] == 15 and summary["epochs"] == 2.5
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


def test_a_compiled_run_that_freezes_its_whitening_bias_compiles_that_graph_before_training(tmp_path, fake_cifar_root,
                                                                                            compose_with, monkeypatch):
    """Issue 25: the whitening bias stops by requires_grad after epoch 1; under torch.compile the graph
    without it is compiled in the warm-up too, so nothing compiles inside the timed loop."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    after_warm_up = []
    warm_up = trainer.warm_up_compiled
    monkeypatch.setattr(trainer, "warm_up_compiled",
                        lambda *a: (warm_up(*a), after_warm_up.append(counter.frame_count)))
    summary = trainer.train(compose_with(
        "experiment=speedrun94", "model.widths=[4,4,4]", "trainer.compile=true", "trainer.batch_size=32",
        "trainer.epochs=2", "trainer.whiten_bias_epochs=1", "trainer.tta=none", "trainer.progress=false",
        "trainer.plots=none", "data.test_subset=100", f"data.root={fake_cifar_root}"), tmp_path / "run")
    assert summary["steps"] == 12 and after_warm_up == [counter.frame_count]
