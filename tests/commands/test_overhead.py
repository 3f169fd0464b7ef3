"""What a job costs besides training: no torch or matplotlib for the CLI's help and config printing, and
scripts/bench.py overhead end to end at toy size."""
import json
import subprocess
import sys

import pytest
from helpers import bench, make_fake_cifar



def imported_modules(*args: str) -> tuple[set[str], str]:
    """Top-level names of the modules `python -X importtime -m cifarbench *args` imports, and its stdout."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "cifarbench", *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines[1:]}  # [0] is the header
    assert "hydra" in names and "cifarbench" in names  # the parsing sees imports at all
    return names, result.stdout


@pytest.mark.parametrize("args, shows", [(["--help"], "Powered by Hydra"), (["--cfg", "job"], "name: lenet")])
def test_help_and_config_printing_import_neither_torch_nor_matplotlib(args, shows):
    names, stdout = imported_modules(*args)
    assert shows in stdout
    assert not names & {"torch", "matplotlib", "PIL", "torchvision"}


@pytest.mark.long
def test_overhead_bench_runs_a_sweep_and_a_single_run_and_profiles_a_job(tmp_path, monkeypatch, capsys):
    """The in-process launcher's sweep (the joblib one runs in tests/report/test_sweeps.py's 2×2 multirun)."""
    root = make_fake_cifar(tmp_path / "data", n_train=300, n_test=100)
    monkeypatch.chdir(tmp_path)
    bench("overhead", "--jobs", "3", "--launchers", "basic", "--repeats", "1", "--device", "cpu", "--data", str(root),
          "--json", str(tmp_path / "overhead.json"), "trainer.plots=none")  # (an override for every run)
    assert "| launcher | jobs | completed | wall_seconds |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "overhead.json").read_text())["rows"]
    sweeps = [r for r in rows if "launcher" in r]
    profile = [r for r in rows if "function" in r]
    (sweep,) = sweeps
    assert sweep["launcher"] == "basic" and sweep["jobs"] == sweep["completed"] == 3
    assert sweep["run_import_seconds"] > sweep["import_seconds"] > 0
    assert sweep["compose_seconds"] > 0 and sweep["cpu_seconds"] > 0 and sweep["single_run_seconds"] > 0
    assert 0 < sweep["train_seconds_sum"] < sweep["wall_seconds"]
    assert sweep["overhead_per_job_seconds"] == pytest.approx(
        (sweep["wall_seconds"] - sweep["train_seconds_sum"]) / 3, abs=0.01)
    assert 0 < sweep["steady_overhead_per_job_seconds"] < sweep["wall_seconds"]  # job 2's start to job 3's
    assert len(list((tmp_path / "outputs" / "bench").glob("overhead-*/basic/*/summary.json"))) == 3
    single = list((tmp_path / "outputs" / "bench").glob("overhead-*/single/summary.json"))
    assert len(single) == 1 and json.loads(single[0].read_text())["config"]["trainer"]["plots"] == "none"
    assert profile[0]["function"] == "cifarbench/engine/loop.py:train" and profile[0]["calls"] == 1
    assert len(profile) == 10 and all(p["function"].startswith("cifarbench/") for p in profile)
    assert profile == sorted(profile, key=lambda p: -p["cumulative_seconds"])


def test_jobs_with_equal_data_reuse_its_decoding_and_are_charged_their_own_preparation(tmp_path, compose_with,
                                                                                      monkeypatch):
    """The in-process data cache: one load for jobs whose data config is equal, the same results as
    without it, each job's own preparation on the device timed and charged (issue 25: every seed was
    charged the warm-up run's), and the data released when the key changes."""
    import gc
    import weakref

    from cifarbench.data import prepared
    from cifarbench.engine.loop import train

    root = make_fake_cifar(tmp_path / "data", n_train=128, n_test=50)
    (loads, load), (fits, fit) = ([], prepared.load_dataset), ([], prepared.build_preprocess)
    monkeypatch.setattr(prepared, "load_dataset", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    monkeypatch.setattr(prepared, "build_preprocess", lambda *args, **kwargs: fits.append(1) or fit(*args, **kwargs))
    base = ("model=lenet", "trainer.epochs=1", "trainer.batch_size=64", "trainer.progress=false",
            "trainer.plots=none", f"data.root={root}")
    first = train(compose_with(*base, "trainer.seed=0"), tmp_path / "first")
    other_seed = train(compose_with(*base, "trainer.seed=1"), tmp_path / "other_seed")
    again = train(compose_with(*base, "trainer.seed=0"), tmp_path / "again")
    assert len(loads) == 1 and len(fits) == 3  # decoded once; each job fits its statistics itself
    assert first["data_preparation"]["from_cache"] is False and first["data_preparation"]["seconds"] > 0
    for summary in (other_seed, again):
        assert summary["data_preparation"]["from_cache"] is True
        assert summary["train_seconds"] >= summary["data_preparation"]["seconds"] > 0  # its own, charged
    assert (again["final_test_acc"], again["final_test_loss"]) == (first["final_test_acc"], first["final_test_loss"])

    held = weakref.ref(prepared._cached[1].train_images)
    smaller = train(compose_with(*base, "data.train_subset=64"), tmp_path / "smaller")
    assert len(loads) == 2 and smaller["data_preparation"]["from_cache"] is False
    gc.collect()
    assert held() is None  # the previous data was released


def test_figures_the_background_worker_could_not_draw_are_drawn_in_place(tmp_path):
    """A sweep's figures go to a background process; if it dies (here: SIGKILL), they are drawn here."""
    import os
    import signal

    from PIL import Image

    from cifarbench.run import background as drawing
    from cifarbench.run.figures import plot_curves

    rows = [{"epoch": 1, "train_acc": 0.3, "test_acc": 0.25, "train_loss": 2.0, "test_loss": 2.1, "val_acc": None}]
    with drawing.in_background():
        drawing.draw(plot_curves, tmp_path / "drawn_there.png", rows)
        drawing.wait()
        for pid in list(drawing._worker._processes):
            os.kill(pid, signal.SIGKILL)
        drawing.draw(plot_curves, tmp_path / "drawn_here.png", rows)
        drawing.wait()
    for name in ("drawn_there.png", "drawn_here.png"):
        with Image.open(tmp_path / name) as png:
            assert png.size == (1000, 400)
