"""Experiment trackers beside the run folder's own files: the `logger` config group.

`csv` is the run folder itself (metrics.csv, summary.json, checkpoints, figures), written by the
Recorder whatever `logger` says. The trackers here observe the Recorder, through their own clients:

- `tensorboard` (torch.utils.tensorboard.SummaryWriter) writes event files into `<run>/tensorboard/`:
  every metrics.csv column but `step` as a scalar of that name at each evaluation, its global step the
  row's optimizer step; at the end the flattened config and the summary's final metrics for the HParams
  plugin, and curves.png, confusion.png and samples.png as images.
- `mlflow` (mlflow.tracking.MlflowClient) makes one MLflow run per job: the flattened config as params,
  the same metrics at each evaluation with their step, the summary's final metrics, the figures,
  summary.json and the Hydra record (`.hydra/`) as artifacts; its status ends FINISHED, KILLED or
  FAILED as summary.json's ends completed, interrupted/preempted or diverged/failed. The jobs of a sweep share
  one MLflow experiment; a resumed run continues its MLflow run (its id travels in the checkpoint).
- `wandb` (the official client, `wandb.init`) makes one Weights & Biases run per job in `<run>/wandb/`:
  the resolved config, the same metrics at each evaluation at their step, the summary's final metrics
  and the figures at the end; offline (`WANDB_MODE=offline`: `wandb sync <run>/wandb/offline-run-*`
  uploads it later) unless `logger.wandb.mode` says otherwise or an API key is set (`WANDB_API_KEY`); a
  resumed run continues its W&B run (its id travels in the checkpoint).

Trackers write at evaluations and at the end only, never during training steps. A tracker that raises
(server down, disk full, unwritable store) logs one warning and is dropped; training, metrics.csv and
the rest of the run folder go on; a tracking server that failed one job of a sweep is not asked again by
its later jobs for SERVER_DOWN_TTL_S. After a resume every tracker holds every row of metrics.csv: one
that does not hold the rows from before it (a new folder, another store) is given them first. Relative
store paths mean the folder the command was run in (`tracking_uri`). Under torch.distributed only rank 0 tracks. Accuracies are
fractions, seconds are training seconds, as in metrics.csv.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from cifarbench.core.config_diff import flatten
from cifarbench.core.files import OutputError, atomic_write_json
from cifarbench.core.registry import ConfigError
from cifarbench.run.layout import METRICS as METRICS_CSV
from cifarbench.run.layout import SERVERS_DOWN, RunFolder
from cifarbench.run.metrics import METRICS

log = logging.getLogger(__name__)

EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker → the module it needs, also its pip extra
SERIES = tuple(c for c in METRICS if c != "step")  # logged per evaluation, under metrics.csv's names
# summary.json's headline numbers, logged once at the end (its train_seconds is the last row's)
FINAL = ("final_test_acc", "final_test_loss", "best_test_acc", "final_val_acc", "final_val_loss", "best_val_acc")
MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "preempted": "KILLED", "diverged": "FAILED",
                 "failed": "FAILED"}
DEFAULT_EXPERIMENT = "cifarbench"
SQLITE = "sqlite:///"
DEFAULT_STORE = "sqlite:///outputs/mlflow.db"  # paths.mlflow_uri's default
SERVER_DOWN_TTL_S = 300  # a sweep's later jobs skip a server found down this long, then ask it again


def check_installed(logger_cfg):
    """Raise ConfigError naming the extra to install when a chosen tracker's package is missing, or psutil
    for `logger.mlflow.system_metrics=true` (MLflow's system metrics read it); checked without importing
    them (mlflow takes seconds to import)."""
    for name, module in EXTRAS.items():
        if name in logger_cfg and importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={name} needs the {module} package, which is not installed: "
                              f"pip install 'cifarbench[{name}]' (or drop {name} from logger)")
    if "mlflow" in logger_cfg and logger_cfg.mlflow.get("system_metrics") and importlib.util.find_spec("psutil") is None:
        raise ConfigError("logger.mlflow.system_metrics=true needs the psutil package (MLflow's system metrics read "
                          "it), which is not installed: pip install 'cifarbench[system-metrics]' (or set it false)")


def hyperparameters(config: dict) -> dict[str, str | int | float | bool]:
    """The resolved config flattened to dotted keys (`optim.lr`), each value a number, a bool or a string
    (null and lists as JSON: `null`, `[0.9, 0.999]`), as both trackers take them."""
    return {key: value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
            for key, value in flatten(config).items()}


def final_metrics(summary: dict) -> dict[str, float]:
    return {key: float(summary[key]) for key in FINAL if summary.get(key) is not None}


class TensorBoardLogger:
    """Event files in `<run>/tensorboard/`, written with torch.utils.tensorboard.SummaryWriter.
    `holds_earlier_rows`: a resume in the folder of the run it continues finds that run's rows there."""
    name = "tensorboard"

    def __init__(self, run_dir: Path, resumed: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = RunFolder(run_dir).tensorboard
        self.holds_earlier_rows = bool(resumed) and resumed.get("log_dir") == str(self.log_dir)
        self.writer = SummaryWriter(str(self.log_dir))

    def record(self) -> dict:
        return {"log_dir": str(self.log_dir)}

    def log_row(self, row: dict):
        for key in SERIES:
            if row[key] is not None:
                self.writer.add_scalar(key, row[key], int(row["step"]))
        self.writer.flush()  # a killed run keeps what it logged

    def finish(self, run_dir: Path, summary: dict):
        import numpy as np
        from PIL import Image
        from torch.utils.tensorboard.summary import hparams

        step = summary.get("steps", 0)
        metrics = final_metrics(summary)
        # The HParams plugin pairs this run's config with the last value of each metric tag it names.
        for summary_proto in hparams(hyperparameters(summary["config"]), metrics):
            self.writer.file_writer.add_summary(summary_proto, step)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        for figure in RunFolder(run_dir).figures():
            with Image.open(figure) as image:
                self.writer.add_image(figure.stem, np.asarray(image.convert("RGB")), step, dataformats="HWC")
        self.writer.close()


def sweep_folder() -> Path | None:
    """The folder of the multirun this job belongs to (Hydra's hydra.sweep.dir), None outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    return None


def experiment_name(configured: str | None) -> str:
    """`logger.mlflow.experiment_name`, else the experiment config's name (`experiment=tenminute`), else for
    a multirun its sweep folder (`<date>/<time>_<run id>`), else "cifarbench"."""
    from hydra.core.hydra_config import HydraConfig

    if configured:
        return configured
    if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("experiment"):
        return HydraConfig.get().runtime.choices.experiment
    if (sweep := sweep_folder()) is not None:
        return f"{sweep.parent.name}/{sweep.name}"
    return DEFAULT_EXPERIMENT


def user_folder() -> Path:
    """The folder the user ran the command in, from which a relative path they typed is taken: the current
    one, or in a job run with `hydra.job.chdir=true` (in a folder of its own) Hydra's `hydra.runtime.cwd`.
    (Not runtime.cwd always: Hydra's config outlives its job in a process, and the process may move on.)"""
    from hydra.core.hydra_config import HydraConfig

    chdir = HydraConfig.initialized() and HydraConfig.get().job.chdir
    return Path(HydraConfig.get().runtime.cwd if chdir else os.getcwd())


def tracking_uri(configured: str | None, base: str | Path | None = None) -> str:
    """The MLflow store `configured` names (`logger.mlflow.tracking_uri`, by default `paths.mlflow_uri`; null:
    DEFAULT_STORE) as an absolute URI, every form MLflow accepts: a relative path is taken from `base` (by
    default `user_folder()`, the folder the command was run in), `~` is expanded.

    - `sqlite:///mlflow.db` (relative), `sqlite:////abs/mlflow.db` → `sqlite:////ABS/mlflow.db` with `%` and `?`
      percent-escaped (SQLAlchemy unquotes the path and ends it at a `?`: a folder named `sweep 100%25 lr`);
    - `file:mlruns`, `file:///abs/mlruns` (RFC 8089, percent-escaped) or a plain path (MLflow's file store)
      → `file:///ABS` (Path.as_uri: escaped);
    - anything else (`http://host:5000`, `https://...`, `databricks`) as it is."""
    uri = configured or DEFAULT_STORE
    base = Path(base) if base is not None else user_folder()
    if uri.startswith(SQLITE):
        path = (base / Path(uri.removeprefix(SQLITE)).expanduser()).resolve()
        return SQLITE + str(path).replace("%", "%25").replace("?", "%3F")
    if uri.startswith("file:"):
        return (base / Path(url2pathname(urlsplit(uri).path)).expanduser()).resolve().as_uri()
    if uri == "databricks" or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri) and not Path(uri).is_absolute():
        return uri  # a server or another store
    return (base / Path(uri).expanduser()).resolve().as_uri()


def sqlite_database(uri: str) -> Path | None:
    """The database file of a `tracking_uri()` SQLite store (unescaped), None for another store."""
    return Path(unquote(uri.removeprefix(SQLITE))) if uri.startswith(SQLITE) else None


@contextlib.contextmanager
def no_stray_folders(uri: str):
    """Around a client's first request to the SQLite store `uri`: MLflow creates the store's parent folder from
    the URI's text, escapes and all (`sweep 100%2525 lr/`), while SQLAlchemy opens the unescaped path; the
    folders it so creates beside the real ones are removed again (when empty)."""
    database, literal = sqlite_database(uri), Path(uri.removeprefix(SQLITE)).parent
    made = [] if database is None or literal == database.parent else [
        folder for folder in (literal, *literal.parents) if not folder.exists()]  # deepest first
    try:
        yield
    finally:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()


def bound_server_wait(timeout_s: float):
    """A tracking server that is down or slow costs at most `timeout_s` seconds per request, once: MLflow's
    HTTP client is told (through its environment variables, for this process) to wait that long and not to
    retry (by default it retries 7 times with backoff, 4 minutes for a server that is down, for every job
    of a sweep). The request that fails drops the tracker with one warning."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"


class ServerDown(RuntimeError):
    """A tracking server that failed (did not answer, or answered with an error) for an earlier job of this
    sweep, less than SERVER_DOWN_TTL_S ago."""


def servers_down(sweep: Path | None) -> dict[str, float]:
    """{tracking server URI: when (Unix seconds) a job of the sweep in `sweep` last found it down}, from the
    sweep folder's marker (run/layout.py's SERVERS_DOWN), which every launcher's jobs share; {} outside a sweep."""
    try:
        return json.loads((sweep / SERVERS_DOWN).read_text()) if sweep is not None else {}
    except (OSError, ValueError):
        return {}


def remember_down(sweep: Path | None, uri: str):
    """Record in the sweep's marker that `uri` did not answer now (a no-op outside a sweep, or unwritable)."""
    if sweep is not None:
        try:
            atomic_write_json(sweep / SERVERS_DOWN, {**servers_down(sweep), uri: time.time()})
        except OutputError:
            pass


class MlflowLogger:
    """One MLflow run for the job, written with mlflow.tracking.MlflowClient (no global active run, so the
    jobs of a sweep in one process never share one). A local SQLite store keeps artifacts beside itself in
    `mlartifacts/`; a server decides for itself."""
    name = "mlflow"

    def __init__(self, run_dir: Path, config: dict, settings, resumed: dict | None = None):
        """`settings`: `logger.mlflow` (tracking_uri, experiment_name, timeout_s, system_metrics and its
        interval); `resumed`: the run's earlier record(). A resume in the same store continues its MLflow run, renamed after `run_dir` (its tag
        `cifarbench.run_dir` too) when that is a new folder; `holds_earlier_rows` says whether the MLflow
        run already holds the metrics rows from before the resume. Raises ServerDown for a server an earlier
        job of this sweep found down (SERVER_DOWN_TTL_S), or what MLflow raises."""
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(settings.get("tracking_uri"))
        if not self.uri.startswith(("http://", "https://")):
            with no_stray_folders(self.uri):
                self.client = MlflowClient(self.uri)
                self._start(run_dir, config, settings, resumed)
            return
        self.client = MlflowClient(self.uri)
        bound_server_wait(settings.get("timeout_s", 10))
        sweep = sweep_folder()
        if (since := servers_down(sweep).get(self.uri)) is not None and time.time() - since < SERVER_DOWN_TTL_S:
            raise ServerDown(f"{self.uri} failed for an earlier job of this sweep {time.time() - since:.0f} s ago; "
                             f"not asked again for {SERVER_DOWN_TTL_S} s")
        try:
            self._start(run_dir, config, settings, resumed)
        except Exception:
            remember_down(sweep, self.uri)
            raise

    def _start(self, run_dir: Path, config: dict, settings, resumed: dict | None):
        self.holds_earlier_rows = bool(resumed) and resumed.get("tracking_uri") == self.uri
        if self.holds_earlier_rows:
            self.experiment_id, self.run_id = resumed["experiment_id"], resumed["run_id"]
            self.client.update_run(self.run_id, status="RUNNING", name=run_dir.name)
            self.client.set_tag(self.run_id, "cifarbench.run_dir", str(run_dir))
            log.info("mlflow: continuing run %s", self.run_id)
        else:
            self._create_run(run_dir, config, settings)
        self.system_metrics = None
        if settings.get("system_metrics"):  # MLflow's own sampler, a thread of its own, stopped in finish()
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.system_metrics = SystemMetricsMonitor(self.run_id, settings.get("system_metrics_interval_s", 10),
                                                       resume_logging=self.holds_earlier_rows, tracking_uri=self.uri)
            self.system_metrics.start()

    def _create_run(self, run_dir: Path, config: dict, settings):
        from mlflow.entities import Param

        database = sqlite_database(self.uri)
        artifacts = None  # a local SQLite store keeps the artifacts beside itself; a server decides for itself
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            artifacts = (database.parent / "mlartifacts").as_uri()
        name = experiment_name(settings.get("experiment_name"))
        self.experiment_id = self._experiment(name, artifacts)
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_dir.name,
                                             tags={"cifarbench.run_dir": str(run_dir)}).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in hyperparameters(config).items()])
        log.info("mlflow: run %s in experiment %r at %s", self.run_id, name, self.uri)

    def _experiment(self, name: str, artifacts: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except Exception:  # another job of the sweep created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def record(self) -> dict:
        return {"tracking_uri": self.uri, "experiment_id": self.experiment_id, "run_id": self.run_id}

    def _log_metrics(self, values: dict[str, float], step: int):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def log_row(self, row: dict):
        self._log_metrics({key: row[key] for key in SERIES if row[key] is not None}, int(row["step"]))

    def finish(self, run_dir: Path, summary: dict):
        """The final metrics and the artifacts, then the run's status (FINISHED, KILLED or FAILED as
        summary.json's): set whatever the metrics and uploads do (an upload that raises still raises,
        for Loggers' one warning, after the status is set)."""
        try:
            if self.system_metrics is not None:
                self.system_metrics.finish()  # its last samples, before the run ends
            self._log_metrics(final_metrics(summary), summary.get("steps", 0))
            folder = RunFolder(run_dir)
            for file in [*folder.figures(), folder.summary]:
                if file.is_file():
                    self.client.log_artifact(self.run_id, str(file))
            if folder.hydra.is_dir():
                self.client.log_artifacts(self.run_id, str(folder.hydra), "hydra")
        finally:
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(summary["status"], "FAILED"))


def wandb_mode(configured: str | None) -> str:
    """`logger.wandb.mode` (online, offline, disabled), else `$WANDB_MODE`, else online when an API key is
    set (`$WANDB_API_KEY`) and offline without one, so a run never waits on a login."""
    return configured or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class WandbLogger:
    """One Weights & Biases run for the job, written with the official client into `<run>/wandb/`."""
    name = "wandb"

    def __init__(self, run_dir: Path, config: dict, settings, resumed: dict | None = None):
        """`settings`: `logger.wandb` (project, entity, mode); `resumed`: the run's earlier record(), whose W&B
        run this one continues, under `run_dir`'s name. `holds_earlier_rows`: the W&B run already holds the
        rows from before the resume (online, or offline in the same folder); else they are logged again."""
        import wandb

        self.mode = wandb_mode(settings.get("mode"))
        self.dir = RunFolder(run_dir).wandb
        # (a record written before records had "dir" is taken as this folder's, as it was then)
        self.holds_earlier_rows = bool(resumed) and (resumed.get("dir", str(self.dir)) == str(self.dir) or
                                                     self.mode == resumed.get("mode") == "online")
        self.run = wandb.init(  # (it writes into dir/wandb/: RunFolder.wandb)
            project=settings.get("project"), entity=settings.get("entity"), dir=str(run_dir), name=run_dir.name,
            config=config, mode=self.mode, id=resumed["run_id"] if resumed else None,
            resume="allow" if resumed else None, reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True))
        log.info("wandb: %s run %s (%s) in %s", "continuing" if resumed else "started", self.run.id, self.mode,
                 self.dir)

    def record(self) -> dict:
        return {"run_id": self.run.id, "mode": self.mode, "project": self.run.project, "dir": str(self.dir)}

    def log_row(self, row: dict):
        self.run.log({key: row[key] for key in SERIES if row[key] is not None}, step=int(row["step"]))

    def finish(self, run_dir: Path, summary: dict):
        import wandb

        self.run.summary.update(final_metrics(summary))
        self.run.summary["status"] = summary["status"]
        figures = {figure.stem: wandb.Image(str(figure)) for figure in RunFolder(run_dir).figures()}
        if figures:
            self.run.log(figures, step=summary.get("steps", 0))
        self.run.finish(exit_code=0 if summary["status"] == "completed" else 1)
        wandb.teardown()  # wait for the client's service to write the run out (it does so after finish returns)


def end_tracked_run(summary: dict):
    """Set the MLflow run a summary.json records (if any) to the status that summary ends with; for a run
    whose ending was recorded outside the Recorder (recorder.record_ending). A tracker error is a warning."""
    record = summary.get("loggers", {}).get("mlflow")
    if not record:
        return
    try:
        from mlflow.tracking import MlflowClient

        with no_stray_folders(record["tracking_uri"]):
            MlflowClient(record["tracking_uri"]).set_terminated(record["run_id"],
                                                                MLFLOW_STATUS.get(summary["status"], "FAILED"))
    except Exception as e:
        log.warning("logger mlflow: could not set run %s to %s (%s: %s)", record["run_id"], summary["status"],
                    type(e).__name__, e)


def log_rows(tracker, rows: list[dict]):
    """Give `tracker` the metrics rows `rows`, in order (the rows from before a resume)."""
    for row in rows:
        tracker.log_row(row)


class Loggers:
    """The trackers of one run, fed by its Recorder: `start` (once the run folder exists), `log_row` (each
    evaluation), `finish` (after the final summary.json). A tracker that raises is dropped after one
    warning. `record()`: where each tracker writes (summary.json's and the checkpoint's `loggers`).

    `logger_cfg`: the config's `logger` group (the trackers chosen, with their fields; None: none);
    `config`: the run's resolved config (the trackers' hyperparameters); `resumed`: the `loggers` record
    of the checkpoint the run resumes from; `earlier_rows`: its metrics rows, which a tracker that does not
    hold them yet (a resume into a new folder, a tracker added on resume) is given at `start`, so it holds
    every row of the run's metrics.csv."""

    def __init__(self, logger_cfg=None, config: dict | None = None, resumed: dict | None = None,
                 earlier_rows: list[dict] = ()):
        self.chosen = [name for name in EXTRAS if logger_cfg is not None and name in logger_cfg]
        self.logger_cfg, self.config, self.resumed, self.trackers = logger_cfg, config or {}, resumed or {}, []
        self.earlier_rows = list(earlier_rows)

    def _guard(self, tracker_name: str, action, *args):
        try:
            return action(*args)
        except Exception as e:
            first_line = (str(e).strip().splitlines() or [""])[0]
            log.warning("logger %s failed (%s: %s); the run goes on without it (%s and the run folder "
                        "are unaffected)", tracker_name, type(e).__name__, first_line, METRICS_CSV)
            self.trackers = [t for t in self.trackers if t.name != tracker_name]
            return None

    def start(self, run_dir: Path):
        """Start the chosen trackers (the recorder starts them on rank 0 only)."""
        builders = {"tensorboard": lambda: TensorBoardLogger(run_dir, self.resumed.get("tensorboard")),
                    "mlflow": lambda: MlflowLogger(run_dir, self.config, self.logger_cfg["mlflow"],
                                                   self.resumed.get("mlflow")),
                    "wandb": lambda: WandbLogger(run_dir, self.config, self.logger_cfg["wandb"],
                                                 self.resumed.get("wandb"))}
        for name in self.chosen:
            tracker = self._guard(name, builders[name])
            if tracker is not None:
                self.trackers.append(tracker)
                if not tracker.holds_earlier_rows and self.earlier_rows:
                    self._guard(name, log_rows, tracker, self.earlier_rows)

    def record(self) -> dict:
        return {t.name: t.record() for t in self.trackers}

    def log_row(self, row: dict):
        for tracker in list(self.trackers):
            self._guard(tracker.name, tracker.log_row, row)

    def finish(self, run_dir: Path, summary: dict):
        for tracker in list(self.trackers):
            self._guard(tracker.name, tracker.finish, run_dir, summary)
