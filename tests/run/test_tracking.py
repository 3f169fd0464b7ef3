"""The `logger` group and report.html, read back the way their users read them: TensorBoard's
EventAccumulator and MlflowClient compared with metrics.csv row for row, a failing tracker, a tracker
that is not installed, a resumed MLflow run, and a real 2×2 sweep's report.html as headless Chromium
renders it."""
import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from helpers import cli_in_process, signal_at
from PIL import Image

from cifarbench.run.trackers import FINAL, SERIES, hyperparameters
from cifarbench.core.registry import ConfigError
from cifarbench.run.metrics import read_metrics

# The module-scoped runs below are shared by its tests: one pytest-xdist worker runs them all.
pytestmark = pytest.mark.xdist_group("test_tracking")

QUICK = ("model=lenet5", "trainer.epochs=2", "trainer.batch_size=32", "data.train_subset=64", "data.test_subset=60",
         "trainer.eval_batch_size=100", "trainer.progress=false")
TRACKERS = [name for name in ("tensorboard", "mlflow") if importlib.util.find_spec(name)]  # (wandb: tested apart)
CONF = Path(__file__).resolve().parents[2] / "conf"


def needs(tracker: str):
    return pytest.mark.skipif(importlib.util.find_spec(tracker) is None, reason=f"install cifarbench[{tracker}] to test logger={tracker}")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shared_fake_root) -> Path:
    """A real 2×2 multirun, optim=sgd,adam × trainer.seed=0,1 (LeNet-5, 2 steps per epoch), with every
    installed tracker, run in-process under Hydra (the CLI's own entry point); its MLflow store is
    sweep/mlflow.db."""
    folder = tmp_path_factory.mktemp("tracked") / "sweep"
    argv = ["-m", "optim=sgd,adam", "trainer.seed=0,1", *QUICK, f"data.root={shared_fake_root}",
            f"logger=[csv{''.join(',' + t for t in TRACKERS)}]", f"hydra.sweep.dir={folder}"]
    if "mlflow" in TRACKERS:
        argv.append(f"logger.mlflow.tracking_uri=sqlite:///{folder}/mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        assert cli_in_process(patch, *argv) == 0
    return folder


def jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/summary.json"))


def summary_of(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


@needs("tensorboard")
def test_tensorboard_holds_every_metrics_row_the_config_and_the_figures(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    assert len(jobs(sweep)) == 4
    for job in jobs(sweep):
        summary, rows = summary_of(job), read_metrics(job / "metrics.csv")
        assert summary["loggers"]["tensorboard"] == {"log_dir": str(job / "tensorboard")}
        events = EventAccumulator(str(job / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        assert len(rows) == 2
        for key in SERIES:
            logged = [(e.step, e.value) for e in events.Scalars(key)] if rows[0][key] is not None else []
            assert logged == [(int(r["step"]), pytest.approx(r[key], rel=1e-6)) for r in rows if r[key] is not None]
        assert events.Scalars("final_test_acc")[0].value == pytest.approx(summary["final_test_acc"], rel=1e-6)
        plugin = {tag: HParamsPluginData.FromString(content)
                  for tag, content in events.PluginTagToContent("hparams").items()}
        hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
        assert hparams["model.name"].string_value == summary["model"]
        assert hparams["optim.lr"].number_value == pytest.approx(summary["config"]["optim"]["lr"])
        assert hparams["trainer.budget_min"].string_value == "null"
        assert set(hparams) == set(hyperparameters(summary["config"]))
        assert ([m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos]
                == [k for k in FINAL if summary.get(k) is not None])
        for name in ("curves", "confusion", "samples"):
            image = events.Images(name)[0]
            with Image.open(job / f"{name}.png") as png:
                assert (image.width, image.height) == png.size


@pytest.fixture(scope="module")
def mlflow_client(sweep):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{sweep}/mlflow.db")


@needs("mlflow")
def test_a_sweep_is_one_mlflow_experiment_with_a_run_per_job_matching_its_files(sweep, mlflow_client, tmp_path):
    experiment = mlflow_client.get_experiment_by_name(f"{sweep.parent.name}/{sweep.name}")
    runs = mlflow_client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == [job.name for job in jobs(sweep)]
    for run in runs:
        job = Path(run.data.tags["cifarbench.run_dir"])
        summary, rows = summary_of(job), read_metrics(job / "metrics.csv")
        assert summary["loggers"]["mlflow"] == {"tracking_uri": f"sqlite:///{sweep}/mlflow.db",
                                                "experiment_id": experiment.experiment_id, "run_id": run.info.run_id}
        assert (run.info.status, summary["status"]) == ("FINISHED", "completed")
        assert run.data.params == {key: str(value) for key, value in hyperparameters(summary["config"]).items()}
        assert run.data.params["optim.name"] == summary["optim"]
        for key in SERIES:
            history = [(m.step, m.value) for m in mlflow_client.get_metric_history(run.info.run_id, key)]
            assert history == [(int(r["step"]), r[key]) for r in rows if r[key] is not None], key
        assert run.data.metrics["final_test_acc"] == summary["final_test_acc"]
        assert run.data.metrics["best_test_acc"] == summary["best_test_acc"]
        assert {a.path for a in mlflow_client.list_artifacts(run.info.run_id)} == {
            "curves.png", "confusion.png", "samples.png", "summary.json", "hydra"}
        assert {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "hydra")} == {
            "hydra/config.yaml", "hydra/hydra.yaml", "hydra/overrides.yaml"}
    copy = mlflow_client.download_artifacts(runs[0].info.run_id, "summary.json", str(tmp_path))
    assert Path(copy).read_bytes() == (Path(runs[0].data.tags["cifarbench.run_dir"]) / "summary.json").read_bytes()


@needs("mlflow")
def test_a_resumed_run_continues_its_mlflow_run(sweep, mlflow_client, tmp_path, shared_fake_root, compose_with):
    from cifarbench.engine.loop import train

    settings = (*QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri=sqlite:///{sweep}/mlflow.db",
                "logger.mlflow.experiment_name=resumed", "trainer.plots=none", f"data.root={shared_fake_root}")
    first = train(compose_with(*settings, "trainer.epochs=1"), tmp_path)
    run_id = first["loggers"]["mlflow"]["run_id"]
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"
    second = train(compose_with(*settings, f"trainer.resume={tmp_path / 'checkpoints' / 'last.pt'}"), tmp_path)
    assert second["loggers"]["mlflow"]["run_id"] == run_id
    experiment = mlflow_client.get_experiment_by_name("resumed")
    assert [run.info.run_id for run in mlflow_client.search_runs([experiment.experiment_id])] == [run_id]
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(m.step, m.value) for m in mlflow_client.get_metric_history(run_id, "test_acc")] == [
        (int(r["step"]), r["test_acc"]) for r in rows]
    assert len(rows) == 2 and mlflow_client.get_run(run_id).data.metrics["final_test_acc"] == second["final_test_acc"]


@needs("mlflow")
def test_a_run_that_fails_ends_its_mlflow_run_failed_as_its_summary(sweep, mlflow_client, tmp_path, monkeypatch,
                                                                     shared_fake_root):
    """The MLflow run starts with the run; its checkpoints/ folder is then taken by a file: the CLI records
    the failure. (A command refused before the run starts, such as missing data, starts no MLflow run.)"""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("a file where the checkpoints/ folder must go")
    assert cli_in_process(monkeypatch, *QUICK, "trainer.plots=none", "logger=mlflow",
                          f"logger.mlflow.tracking_uri=sqlite:///{sweep}/mlflow.db", f"data.root={shared_fake_root}",
                          f"hydra.run.dir={tmp_path / 'run'}") == 2
    summary = summary_of(tmp_path / "run")
    assert summary["status"] == "failed" and "could not write" in summary["error"]
    run = mlflow_client.get_run(summary["loggers"]["mlflow"]["run_id"])
    assert (run.info.status, run.info.run_name) == ("FAILED", "run")
    assert mlflow_client.get_experiment(run.info.experiment_id).name == "cifarbench"  # a single run's default
    assert cli_in_process(monkeypatch, "logger=mlflow", f"logger.mlflow.tracking_uri=sqlite:///{sweep}/mlflow.db",
                          "data.download=false", f"data.root={tmp_path / 'nothing'}",
                          f"hydra.run.dir={tmp_path / 'refused'}") == 2
    assert not (tmp_path / "refused" / "summary.json").exists()


@needs("mlflow")
def test_a_preempted_run_ends_its_mlflow_run_killed(sweep, mlflow_client, tmp_path, monkeypatch, shared_fake_root):
    """Issue 28: SIGTERM (a scheduler taking the machine back) after step 3: summary.json "preempted" at step 3,
    the MLflow run KILLED (not RUNNING), with the rows logged before."""
    import signal

    signal_at(monkeypatch, 3, signal.SIGTERM)
    assert cli_in_process(monkeypatch, *QUICK, "trainer.plots=none", "logger=mlflow", "trainer.epochs=3",
                          f"logger.mlflow.tracking_uri=sqlite:///{sweep}/mlflow.db", f"data.root={shared_fake_root}",
                          f"hydra.run.dir={tmp_path}") == 143
    summary = summary_of(tmp_path)
    assert (summary["status"], summary["steps"]) == ("preempted", 3)  # 64 images in batches of 32: 2 steps an epoch
    run = mlflow_client.get_run(summary["loggers"]["mlflow"]["run_id"])
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "test_acc")] == [2]


def kernel_peak_rss_mib() -> float:
    """This process's peak resident set size as Linux's /proc reports it (VmHWM, kB): getrusage's check."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's /proc/self/status")
def test_the_hardware_columns_are_in_metrics_csv_and_reach_the_trackers(sweep, monkeypatch):
    """Issue 28: every row of a CPU run has the process's peak RSS (MiB), at most the kernel's peak now (the
    sweep ran in this process) and above what torch alone takes (~100 MiB), never decreasing; the CUDA and
    NVML columns are empty cells on a CPU; MLflow holds the same series (TensorBoard and W&B: SERIES in
    their tests). summary.json's `hardware` names the CPU and the CUDA build (None for a CPU build)."""
    import torch

    from cifarbench.core.hardware import HARDWARE_METRICS, HardwareMonitor

    assert set(HARDWARE_METRICS) <= set(SERIES)
    for job in jobs(sweep):
        rows = read_metrics(job / "metrics.csv")
        peaks = [row["max_rss_mib"] for row in rows]
        assert all(100 < peak <= kernel_peak_rss_mib() + 1 for peak in peaks) and peaks == sorted(peaks)
        assert {(row["max_memory_allocated_mib"], row["max_memory_reserved_mib"], row["gpu_utilization"],
                 row["gpu_power_w"]) for row in rows} == {(None, None, None, None)}
        hardware = summary_of(job)["hardware"]
        assert hardware["cuda"] == torch.version.cuda and hardware["threads"] >= 1 and "gpu" not in hardware
        if "mlflow" in TRACKERS:
            from mlflow.tracking import MlflowClient

            record = summary_of(job)["loggers"]["mlflow"]
            history = MlflowClient(record["tracking_uri"]).get_metric_history(record["run_id"], "max_rss_mib")
            assert [(m.step, m.value) for m in history] == [(int(r["step"]), r["max_rss_mib"]) for r in rows]
    monitor = HardwareMonitor(torch.device("cpu"))
    assert monitor.read()["max_rss_mib"] == pytest.approx(kernel_peak_rss_mib(), abs=1)  # getrusage = /proc


def test_the_cuda_and_nvml_figures_in_their_units(monkeypatch):
    """On CUDA (faked here: no GPU on the test machine) each row holds the allocator's peaks in MiB, reset after
    each read, and with NVML the utilisation as a fraction and the window's mean power from the energy
    counter: 3 MiB and 5 MiB peaks; 45% busy; 30,000 mJ more over 10 s = 3.0 W; then, without an energy
    counter, the instantaneous draw (250,000 mW = 250.0 W)."""
    import types

    import torch

    from cifarbench.core import hardware

    resets, clock = [], iter([100.0, 110.0, 120.0])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: resets.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2 ** 20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 5 * 2 ** 20)
    monkeypatch.setattr(hardware.time, "perf_counter", lambda: next(clock))
    energy = iter([1_000_000, 1_030_000])

    class NVMLError(Exception):
        pass

    def energy_counter(handle):
        try:
            return next(energy)
        except StopIteration:
            raise NVMLError("not supported") from None

    fake = types.SimpleNamespace(
        NVMLError=NVMLError, nvmlDeviceGetTotalEnergyConsumption=energy_counter,
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=45),
        nvmlDeviceGetPowerUsage=lambda handle: 250_000)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(hardware, "nvml_handle", lambda device: "handle")
    monitor = hardware.HardwareMonitor(torch.device("cuda", 0))
    row = monitor.read()
    assert {k: row[k] for k in ("max_memory_allocated_mib", "max_memory_reserved_mib", "gpu_utilization",
                                "gpu_power_w")} == {"max_memory_allocated_mib": 3.0, "max_memory_reserved_mib": 5.0,
                                                    "gpu_utilization": 0.45, "gpu_power_w": 3.0}
    assert len(resets) == 2  # at the start and after the read: the next row's window starts afresh
    assert monitor.read()["gpu_power_w"] == 250.0


@needs("mlflow")
def test_mlflows_own_system_metrics_are_an_option(sweep, mlflow_client, tmp_path, monkeypatch):
    """logger.mlflow.system_metrics=true: MLflow's sampler logs system/* metrics into the run until it ends
    (sampled every 0.2 s here); without psutil the run is refused in one line naming the extra."""
    import time

    from omegaconf import OmegaConf

    from cifarbench.run import trackers

    uri = f"sqlite:///{sweep}/mlflow.db"  # (a store made afresh costs seconds of table creation)
    settings = {"tracking_uri": uri, "experiment_name": "system", "system_metrics": True,
                "system_metrics_interval_s": 0.2}
    loggers = trackers.Loggers(OmegaConf.create({"mlflow": settings}), {"a": 1})
    (tmp_path / "run").mkdir()
    loggers.start(tmp_path / "run")
    time.sleep(0.5)
    loggers.finish(tmp_path / "run", {"status": "completed", "steps": 1, "config": {"a": 1}})
    run = mlflow_client.get_run(loggers.record()["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and "system/cpu_utilization_percentage" in run.data.metrics
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psutil" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"system_metrics=true needs the psutil package .*'cifarbench\[system-metrics\]'"):
        trackers.check_installed(OmegaConf.create({"mlflow": settings}))


@needs("mlflow")
def test_a_tracking_server_that_is_down_costs_seconds_and_one_warning(monkeypatch, caplog):
    """Seen (issue 26): http://127.0.0.1:9 (nothing listens) cost 4 min 12 s of retries before training, again
    for every job of a sweep. Now one request, bounded by logger.mlflow.timeout_s, then one warning."""
    import time

    from omegaconf import OmegaConf

    from cifarbench.run.trackers import Loggers

    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)  # restored after the test (bound_server_wait sets them)
    loggers = Loggers(OmegaConf.create({"mlflow": {"tracking_uri": "http://127.0.0.1:9", "experiment_name": None,
                                                   "timeout_s": 3}}), {"a": 1})
    start = time.perf_counter()
    loggers.start(Path("run"))
    assert time.perf_counter() - start < 10 and loggers.record() == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("logger mlflow failed")


@needs("mlflow")
def test_an_mlflow_run_ends_with_its_status_when_the_artifact_upload_fails(tmp_path, monkeypatch, caplog):
    """Seen (issue 26): the artifact folder could not be created; summary.json said completed and the MLflow
    run stayed RUNNING with no end time."""
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from cifarbench.run.trackers import Loggers

    def no_artifacts(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied: 'mlartifacts'")

    monkeypatch.setattr(MlflowClient, "log_artifact", no_artifacts)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    loggers = Loggers(OmegaConf.create({"mlflow": {"tracking_uri": uri, "experiment_name": "upload"}}), {"a": 1})
    (tmp_path / "run").mkdir()
    loggers.start(tmp_path / "run")
    run_id = loggers.record()["mlflow"]["run_id"]
    summary = {"status": "interrupted", "steps": 3, "config": {"a": 1}, "final_test_acc": 0.5}
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    loggers.finish(tmp_path / "run", summary)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.metrics["final_test_acc"] == 0.5
    assert sum("Permission denied" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 1


@pytest.mark.skipif(not TRACKERS, reason="install cifarbench[tensorboard] or cifarbench[mlflow]")
def test_failing_trackers_warn_once_each_and_the_run_completes(tmp_path, shared_fake_root, compose_with, caplog):
    """TensorBoard's folder is taken by a file, MLflow's SQLite store would lie under a file."""
    from cifarbench.engine.loop import train

    blocker, run = tmp_path / "a_file", tmp_path / "run"
    blocker.write_text("")
    run.mkdir()
    (run / "tensorboard").write_text("")
    summary = train(compose_with(*QUICK, f"logger=[csv,{','.join(TRACKERS)}]", "trainer.plots=none",
                                 f"logger.mlflow.tracking_uri=sqlite:///{blocker}/mlflow.db",
                                 f"data.root={shared_fake_root}"), run)
    assert summary["status"] == "completed" and summary["loggers"] == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.split(" (")[0] for w in warnings] == [f"logger {tracker} failed" for tracker in TRACKERS]
    assert all(w.endswith("the run goes on without it (metrics.csv and the run folder are unaffected)")
               for w in warnings)
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == [2, 4]
    assert json.loads((run / "summary.json").read_text())["final_test_acc"] == summary["final_test_acc"]


def test_a_tracker_that_is_not_installed_names_its_extra(compose_with, monkeypatch):
    from cifarbench.validate import validate_config

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "mlflow" else find_spec(name, *args))
    with pytest.raises(ConfigError) as error:
        validate_config(compose_with("logger=many"))
    assert str(error.value) == ("logger=mlflow needs the mlflow package, which is not installed: "
                                "pip install 'cifarbench[mlflow]' (or drop mlflow from logger)")
    validate_config(compose_with("logger=[csv,tensorboard]"))


def test_every_logger_entry_is_declared_once():
    from omegaconf import OmegaConf

    from cifarbench.validate import LOGGER

    entries = {p.stem: OmegaConf.load(p) for p in (CONF / "logger").glob("*.yaml")}
    assert list(entries.pop("many").defaults) == list(LOGGER.fields)
    for name, entry in entries.items():
        assert list(entry) == [name]
        assert list(entry[name]) == list(LOGGER.fields[name].fields)


def test_report_lists_the_jobs_a_sweep_never_started(sweep, tmp_path, capsys):
    """From the sweep's own record (multirun.yaml): a job whose folder was never made, and one whose folder
    holds nothing but Hydra's record, are listed as not started and ranked last."""
    from cifarbench.commands.report import main

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "mlartifacts", "*.db",
                                                               "*.png", "report.html"))
    never, emptied = sorted(p for p in copy.iterdir() if p.is_dir())[1:3]
    shutil.rmtree(never)
    for name in ("summary.json", "metrics.csv"):
        (emptied / name).unlink()
    assert main([str(copy)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\n2 job\(s\) never started: #1 optim=sgd trainer\.seed=1 model=lenet5 .* \(sweep .*\); "
                     r"#2 optim=adam trainer\.seed=0 model=lenet5 .*\n", out)
    with open(copy / "leaderboard_runs.csv") as f:
        runs = {(row["run"], row["seed"], row["status"]) for row in csv.DictReader(f)}
    assert runs == {("optim=sgd", "0", "completed"), ("optim=sgd", "", "not started"),
                    ("optim=adam", "", "not started"), ("optim=adam", "1", "completed")}
    with open(copy / "leaderboard.csv") as f:  # each joins the setting of its seed that ran
        board = {(row["setting"], row["n"], row["objective"], row["status"]) for row in csv.DictReader(f)}
    assert board == {(s, "1", "-inf", "1 completed, 1 not started") for s in ("optim=sgd", "optim=adam")}
    assert "<h2>Jobs never started (2)</h2>" in (copy / "report.html").read_text()


# report.html -----------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Tables(HTMLParser):
    """The text of every cell of every table with an id, and every link, of an HTML document."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.links, self._table, self._in_cell = {}, [], None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "id" in attrs:
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag == "td" and self._table is not None:
            self._table[-1].append("")
            self._in_cell = True
        elif tag == "a":
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        self._in_cell = self._in_cell and tag != "td"
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._in_cell:
            self._table[-1][-1] += data


# Appended to a copy of a page: how many px the document, and each table's box (.wide), are wider than the window
# shows (0 or less: no horizontal scrolling), as a data attribute --dump-dom shows.
MEASURE = ("<script>document.body.dataset.overflow = [document.documentElement, ...document.querySelectorAll('.wide')]"
           ".map(e => e.scrollWidth - e.clientWidth).join(',');</script>")
WINDOW = (1400, 1600)  # px: the page must fit 1400 px without horizontal scrolling


def render(page: Path, tmp_path: Path, address: str = "", screenshot: Path | None = None) -> tuple[str, list[int]]:
    """(the DOM after its scripts ran, the px by which the document and each .wide box overflow) of `page`
    in headless Chromium in a WINDOW-sized window, opened at `address` (`#sort=...`), from a copy beside it."""
    copy = tmp_path / "measured.html"
    copy.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    shot = [f"--screenshot={screenshot}"] if screenshot else []
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", *shot, f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom",
         copy.as_uri() + address], capture_output=True, text=True, timeout=120, check=True).stdout
    return dom, [int(v) for v in re.search(r'data-overflow="([-\d,]+)"', dom).group(1).split(",")]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium to render report.html (Debian: apt-get install chromium)")
def test_report_html_as_chromium_renders_it(sweep, tmp_path):
    page = sweep / "report.html"
    text = page.read_text()
    assert len(text) < 2_000_000  # small enough to mail
    assert not re.search(r'(?:src|href)="(?!data:)[^"]*://', text)  # nothing fetched from anywhere
    shot = tmp_path / "page.png"
    dom, overflow = render(page, tmp_path, "#sort=final_test_acc", shot)  # ascending: the script re-sorts the runs
    assert max(overflow) <= 0  # fits 1400 px, tables included
    parsed = Tables(dom)
    runs = [row for row in parsed.tables["runs1"] if row]
    with open(sweep / "leaderboard_runs.csv") as f:
        board = {row["path"]: row for row in csv.DictReader(f)}
    assert len(runs) == len(board) == 4
    for job in jobs(sweep):
        summary = summary_of(job)
        label, seed = f"optim={summary['optim']}", str(summary["config"]["trainer"]["seed"])
        assert board[str(job)]["run"] == label
        assert [label, seed, "completed", f"{summary['final_test_acc']:.4f}"] in [row[:3] + row[4:5] for row in runs]
    accuracies = [float(row[4]) for row in runs]
    assert accuracies == sorted(accuracies)  # sorted by the address's column, in Chromium
    with open(sweep / "leaderboard.csv") as f:  # the settings, ranked, each mean ± std over its 2 seeds
        ranked = [(row["setting"], f"{float(row['final_test_acc_mean']):.4f} ± {float(row['final_test_acc_std']):.4f}")
                  for row in csv.DictReader(f)]
    header = next(line for line in (sweep / "leaderboard.md").read_text().splitlines() if line.startswith("| setting"))
    column = header.split(" | ").index("final_test_acc_mean")  # (the settings table shows leaderboard.md's columns)
    shown = [(row[0], row[column]) for row in parsed.tables["settings1"] if row]
    assert [setting for setting, _ in shown] == [setting for setting, _ in ranked]
    assert all(cell.startswith(f"{mean_std} [") for (_, cell), (_, mean_std) in zip(shown, ranked))  # then its CI
    folders = [link for link in parsed.links if not link.startswith("data:")]
    assert sorted((sweep / unquote(link)).resolve() for link in folders) == [job.resolve() for job in jobs(sweep)]
    with Image.open(shot) as png:
        assert png.size == WINDOW
        assert len(png.convert("L").getcolors(1 << 16)) > 50  # text, tables and figures, not a blank page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium to render report.html (Debian: apt-get install chromium)")
def test_report_html_with_long_labels_and_every_column_fits_1400_px(tmp_path):
    """Seen: report.html needed horizontal scrolling at 1400 px (its settings table 2342 px wide). The worst
    case on file: long study variants and overrides as labels, a --target's columns, and a failed seed whose
    error is one long word; every cell wraps, so the document and each table fit the window."""
    from helpers import fake_run

    from cifarbench.commands.report import main

    for i in range(4):
        for seed in (0, 1):
            fake_run(tmp_path / "runs" / f"{2 * i + seed}",
                     [f"study/tenminute=variant_{i}_with_a_very_long_descriptive_name_that_goes_on_and_on",
                      f"optim.lr={0.01 * (i + 1):g}", f"+model.norm_momentum={0.1 * (i + 1):g}",
                      f"trainer.seed={seed}"],
                     0.3 + 0.05 * i + 0.01 * seed)
    failed = tmp_path / "runs" / "7" / "summary.json"
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "status": "failed",
                                  "error": "ConfigError: " + "a_long_error_without_spaces_" * 8}))
    assert main([str(tmp_path / "runs"), "--target", "0.4"]) == 0
    dom, overflow = render(tmp_path / "runs" / "report.html", tmp_path)
    assert len(overflow) == 3 and max(overflow) <= 0  # the document, the settings table, the runs table
    assert 'data-key="p_above_target"' in dom and "a_long_error_without_spaces_" in dom


# Where the MLflow store is (issue 26) --------------------------------------------------------------------------
def test_every_mlflow_uri_form_is_made_absolute_from_the_folder_the_command_ran_in():
    """Written out by hand: MLflow's documented relative form (`sqlite:///mlflow.db`), absolute SQLite paths,
    file: URIs and plain paths (its file store), with `%`, `?` and spaces escaped where the URI is parsed."""
    from cifarbench.run.trackers import sqlite_database, tracking_uri

    base = "/home/ann/sweep 100%25 lr"
    assert tracking_uri("sqlite:///mlflow.db", base) == "sqlite:////home/ann/sweep 100%2525 lr/mlflow.db"
    assert tracking_uri("sqlite:///outputs/../m.db", base) == "sqlite:////home/ann/sweep 100%2525 lr/m.db"
    assert tracking_uri("sqlite:////srv/a?b/m.db", base) == "sqlite:////srv/a%3Fb/m.db"
    assert sqlite_database(tracking_uri("sqlite:///mlflow.db", base)) == Path(base) / "mlflow.db"
    assert tracking_uri("mlruns", base) == "file:///home/ann/sweep%20100%2525%20lr/mlruns"
    assert tracking_uri("/srv/my runs", base) == "file:///srv/my%20runs"
    assert tracking_uri("file:mlruns", base) == "file:///home/ann/sweep%20100%2525%20lr/mlruns"
    assert tracking_uri("file:///srv/my%20runs", base) == "file:///srv/my%20runs"
    for remote in ("http://127.0.0.1:5000", "https://mlflow.example.org/", "databricks", "databricks://profile"):
        assert tracking_uri(remote, base) == remote
    assert tracking_uri(None, base) == "sqlite:////home/ann/sweep 100%2525 lr/outputs/mlflow.db"


def track_one_row(uri: str, run_dir: Path) -> dict:
    """A tracked run's life through Loggers (start, one metrics row, finish) in the store `uri`; its record."""
    from omegaconf import OmegaConf

    from cifarbench.run.trackers import Loggers

    loggers = Loggers(OmegaConf.create({"mlflow": {"tracking_uri": uri, "experiment_name": "forms"}}), {"a": 1})
    run_dir.mkdir()
    loggers.start(run_dir)
    row = {key: 0.5 for key in SERIES} | {"step": 7, "val_loss": None, "val_acc": None}
    loggers.log_row(row)
    loggers.finish(run_dir, {"status": "completed", "steps": 7, "config": {"a": 1}, "final_test_acc": 0.5})
    return loggers.record()


@needs("mlflow")
def test_mlflow_tracks_in_a_folder_named_with_percent_and_spaces_in_every_local_uri_form(sweep, tmp_path,
                                                                                       monkeypatch, caplog):
    """Seen (issue 26): `sqlite:///mlflow.db` (MLflow's documented relative form) was "relative path can't be
    expressed as a file URI"; in a folder named `sweep 100%25 lr` the default store was ~100 s of retries (its
    path put into the URI unescaped). Read back by MLflow's own client from that folder, in the relative forms."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    folder = tmp_path / "sweep 100%25 lr"
    folder.mkdir()
    shutil.copy(sweep / "mlflow.db", folder / "mlflow.db")  # (a store made before: no schema migration to wait for)
    monkeypatch.chdir(folder)
    forms = (("sqlite:///mlflow.db", "sqlite:///mlflow.db"), ("mlruns", "mlruns"),
             ((folder / "file store").as_uri(), "file store"))
    for number, (uri, reader) in enumerate(forms):
        record = track_one_row(uri, folder / f"run {number}")["mlflow"]
        run = MlflowClient(reader).get_run(record["run_id"])
        assert (run.info.status, run.data.metrics["test_acc"], run.data.metrics["final_test_acc"]) == (
            "FINISHED", 0.5, 0.5), uri
        assert run.data.tags["cifarbench.run_dir"] == str(folder / f"run {number}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep 100%25 lr"]  # no folder of escapes beside it
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


class SilentServer:
    """A TCP port that accepts connections and never answers: a tracking server that hangs."""

    def __init__(self):
        import socket

        self.socket = socket.create_server(("127.0.0.1", 0), backlog=8)
        self.uri = f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def connections(self) -> int:
        self.socket.setblocking(False)
        count = 0
        while True:
            try:
                self.socket.accept()[0].close()
            except BlockingIOError:
                return count
            count += 1


@needs("mlflow")
def test_a_sweeps_later_jobs_do_not_wait_on_a_server_an_earlier_job_found_down(tmp_path, monkeypatch, caplog):
    """Seen (issue 26): every job of a sweep waited minutes on the same server that was down. The first job waits
    logger.mlflow.timeout_s (1 s here) once and warns; the next job asks no server and says why in one warning."""
    import time

    from omegaconf import OmegaConf

    from cifarbench.run import trackers
    from cifarbench.run.layout import SERVERS_DOWN

    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)  # restored after the test (bound_server_wait sets them)
    monkeypatch.setattr(trackers, "sweep_folder", lambda: tmp_path)  # as in a multirun whose folder is tmp_path
    server = SilentServer()
    settings = OmegaConf.create({"mlflow": {"tracking_uri": server.uri, "experiment_name": None, "timeout_s": 1}})
    seconds = []
    for job in range(2):
        loggers, start = trackers.Loggers(settings, {"a": 1}), time.perf_counter()
        loggers.start(tmp_path / str(job))
        seconds.append(time.perf_counter() - start)
        assert loggers.record() == {}
    assert 1 <= seconds[0] < 5 and seconds[1] < 0.5
    assert server.connections() == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all(w.startswith("logger mlflow failed") for w in warnings)
    assert f"ServerDown: {server.uri} failed for an earlier job of this sweep" in warnings[1]
    assert list(json.loads((tmp_path / SERVERS_DOWN).read_text())) == [server.uri]


def test_with_chdir_the_paths_a_user_types_mean_the_folder_they_typed_them_in(compose_with):
    """hydra.job.chdir=true runs a job in its own folder; what was typed relative is taken from hydra.runtime.cwd
    (here /home/ann/work), the default MLflow store included; absolute paths, `~` and resume=auto stay."""
    from cifarbench.commands.train import typed_paths_absolute

    cfg = compose_with("data.root=data", "paths.output_dir=out", "trainer.resume=out/runs/a/checkpoints/last.pt",
                       "logger=[csv,mlflow]")
    typed_paths_absolute(cfg, "/home/ann/work")
    assert (cfg.data.root, cfg.paths.output_dir, cfg.trainer.resume, cfg.logger.mlflow.tracking_uri) == (
        "/home/ann/work/data", "/home/ann/work/out", "/home/ann/work/out/runs/a/checkpoints/last.pt",
        "sqlite:////home/ann/work/out/mlflow.db")
    cfg = compose_with("data.root=/srv/data", "paths.output_dir='~/runs'", "trainer.resume=auto", "logger=[csv,mlflow]",
                       "logger.mlflow.tracking_uri=sqlite:///store.db")
    typed_paths_absolute(cfg, "/home/ann/work")
    assert (cfg.data.root, cfg.paths.output_dir, cfg.trainer.resume, cfg.logger.mlflow.tracking_uri) == (
        "/srv/data", "~/runs", "auto", "sqlite:////home/ann/work/store.db")


@needs("mlflow")
def test_a_chdir_sweep_reads_data_from_where_it_was_typed_and_shares_one_mlflow_store(sweep, tmp_path, monkeypatch,
                                                                                        shared_fake_root):
    """Seen (issue 26): with hydra.job.chdir=true `data.root=data` was looked up in the job's folder and each job
    of a sweep wrote its own MLflow store."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "data").symlink_to(shared_fake_root, target_is_directory=True)
    shutil.copy(sweep / "mlflow.db", tmp_path / "store.db")  # (made before: no schema migration to wait for)
    monkeypatch.chdir(tmp_path)
    assert cli_in_process(monkeypatch, "-m", "trainer.seed=0,1", *QUICK, "trainer.epochs=1", "trainer.plots=none",
                          "hydra.job.chdir=true", "data.root=data", "logger=[csv,mlflow]",
                          "logger.mlflow.tracking_uri=sqlite:///store.db", "logger.mlflow.experiment_name=chdir",
                          "hydra.sweep.dir=multirun", "~hydra.callbacks.leaderboard") == 0  # (no report: not this test's)
    assert Path.cwd() == tmp_path
    folders = jobs(tmp_path / "multirun")
    assert len(folders) == 2 and not list((tmp_path / "multirun").rglob("*.db"))
    client = MlflowClient("sqlite:///store.db")
    runs = client.search_runs([client.get_experiment_by_name("chdir").experiment_id])
    assert sorted(run.data.tags["cifarbench.run_dir"] for run in runs) == [str(job) for job in folders]
    assert all(summary_of(job)["config"]["data"]["root"] == str(tmp_path / "data") for job in folders)


# Weights & Biases, offline ---------------------------------------------------------------------------------------
def wandb_records(path: Path) -> list:
    """The records of a `.wandb` file, parsed with the client's own protobuf schema (wandb_internal_pb2):
    a 7-byte header (":W&B", magic 0xBEE1, version), then LevelDB's log format, as the client writes it:
    32 KiB blocks of chunks, each a 7-byte header (CRC-32C, length as 2 bytes little-endian, type: 1 full,
    2 first, 3 middle, 4 last) and its bytes; a block's tail shorter than a header is padding."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, pending, offset = [], b"", 7
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # padding at the end of a block
            offset += block - offset % block
            continue
        length, kind = int.from_bytes(data[offset + 4:offset + 6], "little"), data[offset + 6]
        chunk, offset = data[offset + 7:offset + 7 + length], offset + 7 + length
        if kind == 0 and length == 0:  # zeros: the unwritten end
            break
        pending += chunk
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_dir: Path) -> tuple[set[str], list[dict], dict, dict]:
    """The run ids, the history rows ({key: value, "_step": step}, nested keys joined by "/"), the last
    summary and the config of every offline W&B run under `<run>/wandb/`, in the order they were written."""
    ids, history, summary, config = set(), [], {}, {}
    for file in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for record in wandb_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                history.append(row)
            elif kind == "summary":
                summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.summary.update})
    return ids, history, summary, config


@needs("wandb")
def test_wandb_offline_holds_every_metrics_row_and_a_resume_continues_its_run(tmp_path, shared_fake_root,
                                                                             compose_with, monkeypatch):
    from cifarbench.engine.loop import train

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # no key: offline by default
    settings = (*QUICK, "logger=[csv,wandb]", f"data.root={shared_fake_root}")
    first = train(compose_with(*settings, "trainer.epochs=1"), tmp_path)
    record = first["loggers"]["wandb"]
    assert record["mode"] == "offline" and record["project"] == "cifarbench"
    second = train(compose_with(*settings, f"trainer.resume={tmp_path / 'checkpoints' / 'last.pt'}"), tmp_path)
    assert second["loggers"]["wandb"]["run_id"] == record["run_id"]
    ids, history, summary, config = wandb_history(tmp_path)
    assert ids == {record["run_id"]}, "the resumed run continues the same W&B run"
    rows = read_metrics(tmp_path / "metrics.csv")
    logged = [row for row in history if "test_acc" in row]
    assert len(rows) == len(logged) == 2
    for row, entry in zip(rows, logged):
        assert entry["_step"] == row["step"]
        assert {key: entry[key] for key in SERIES if row[key] is not None} == {
            key: row[key] for key in SERIES if row[key] is not None}
    assert summary["final_test_acc"] == second["final_test_acc"] and summary["status"] == "completed"
    assert all(config[group] == first["config"][group] for group in ("model", "optim", "aug", "data"))
    images = {key.split("/")[0] for key, value in history[-1].items() if key.endswith("/_type") and value == "image-file"}
    assert images == {"curves", "confusion", "samples"}, "the figures, at the end"


@needs("tensorboard")
@needs("mlflow")
@needs("wandb")
def test_a_resume_into_a_new_folder_holds_every_row_in_every_tracker_under_that_folders_name(
        sweep, mlflow_client, tmp_path, shared_fake_root, compose_with, monkeypatch):
    """Seen (issue 26): resumed into a new folder, its TensorBoard lacked the rows before the interruption (its
    metrics.csv has them) and the MLflow run's name and `cifarbench.run_dir` tag named the interrupted folder.
    Read back with each tracker's own reader: every row of the new folder's metrics.csv, under its name."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cifarbench.engine.loop import train

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # offline
    settings = (*QUICK, "logger=many", f"logger.mlflow.tracking_uri=sqlite:///{sweep}/mlflow.db",
                "logger.mlflow.experiment_name=moved", "trainer.plots=none", f"data.root={shared_fake_root}")
    first, moved = tmp_path / "interrupted", tmp_path / "resumed here"
    before = train(compose_with(*settings, "trainer.epochs=1"), first)
    after = train(compose_with(*settings, f"trainer.resume={first / 'checkpoints' / 'last.pt'}"), moved)
    rows = read_metrics(moved / "metrics.csv")
    assert [r["step"] for r in rows] == [2, 4] and set(after["loggers"]) == {"tensorboard", "mlflow", "wandb"}
    expected = [(r["step"], r["test_acc"]) for r in rows]

    events = EventAccumulator(str(moved / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("test_acc")] == [(s, pytest.approx(v)) for s, v in expected]

    run = mlflow_client.get_run(after["loggers"]["mlflow"]["run_id"])
    assert run.info.run_id == before["loggers"]["mlflow"]["run_id"]  # the same MLflow run, continued
    assert (run.info.run_name, run.data.tags["cifarbench.run_dir"]) == ("resumed here", str(moved))
    assert [(m.step, m.value) for m in mlflow_client.get_metric_history(run.info.run_id, "test_acc")] == expected

    ids, history, _, _ = wandb_history(moved)
    assert ids == {before["loggers"]["wandb"]["run_id"]}
    assert [(row["_step"], row["test_acc"]) for row in history if "test_acc" in row] == expected
    names = [record.run.display_name for file in (moved / "wandb").glob("offline-run-*/run-*.wandb")
             for record in wandb_records(file) if record.WhichOneof("record_type") == "run"]
    assert names and set(names) == {"resumed here"}
