"""The runs a report reads: every run folder under some folders (its summary.json, metrics.csv and
Hydra overrides), and the jobs their sweeps listed but never started."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cifarbench.run.layout import run_folders
from cifarbench.run.metrics import read_metrics
from cifarbench.run.setting import SEED, TEST_SET, is_setting_override, setting_key

NOT_STARTED = "not started"


@dataclass
class Run:
    """One run folder (`path`), or a job its sweep never started (`path` its sweep folder, `summary`
    {"status": "not started"}, `data` the sweep's data config with the job's data overrides)."""
    path: Path
    summary: dict
    rows: list[dict]
    overrides: list[str] = field(default_factory=list)
    sweep: Path | None = None  # the sweep folder (holding multirun.yaml) the run is a job of
    data: dict | None = None

    @property
    def status(self) -> str:
        status = self.summary.get("status")
        # "running" in a finished report means the process died (killed) or is still going.
        return "incomplete" if status in (None, "running") else status

    @property
    def job(self) -> tuple[str, ...]:
        """The overrides that make this job the job it is in its sweep (seed included)."""
        return tuple(sorted(o for o in self.overrides if is_setting_override(o)))

    @property
    def seedless_job(self) -> tuple:
        """(its sweep, its job's overrides but the seed): what the seeds of one setting share."""
        return str(self.sweep), [o for o in self.job if not o.startswith(f"{SEED}=")]

    @property
    def setting(self) -> str:
        """What the run's config is apart from its seed and what is not the setting (run/setting.py; without
        a config: its sweep and overrides, else its folder)."""
        config = self.summary.get("config")
        if config:
            return setting_key(config)
        if self.overrides:
            return json.dumps(self.seedless_job)
        return f"path:{self.path}"

    @property
    def test_set(self) -> str:
        """The test set the run is scored on, as its data fields that decide it (`data.test_subset=500`)."""
        data = self.summary.get("config", {}).get("data", self.data)
        if data is None:
            return "unknown (no config recorded)"
        return ", ".join(f"data.{k}={'null' if v is None else v}" for k, v in sorted(data.items())
                         if k in TEST_SET) or "data (default)"


def sweep_of(path: Path) -> Path | None:
    return next((p for p in path.parents if (p / "multirun.yaml").is_file()), None)


def find_runs(folder: str | Path) -> list[Run]:
    """Every run folder (run/layout.py's `run_folders`) under `folder`, in path order."""
    runs = []
    for run_folder in run_folders(folder):
        rows, overrides = [], []
        try:
            rows = read_metrics(run_folder.metrics)
        except (OSError, ValueError, KeyError):
            pass
        try:
            overrides = yaml.safe_load(run_folder.overrides.read_text()) or []
        except (OSError, yaml.YAMLError):
            pass
        path = run_folder.path
        runs.append(Run(path, run_folder.read_summary() or {}, rows, overrides, sweep_of(path.resolve())))
    return runs


def sweep_jobs(sweep: Path) -> tuple[list[list[str]], dict] | None:
    """What a sweep folder's multirun.yaml says its sweeper launches: the overrides of each job in job-number
    order, expanded by Hydra's own BasicSweeper from the sweeper's params and the command line's
    overrides; and the sweep's data config. None for another sweeper (Optuna draws its trials as it
    goes) or an unreadable record."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        record = yaml.safe_load((sweep / "multirun.yaml").read_text())
        hydra = record["hydra"]
        if not hydra["sweeper"]["_target_"].endswith(".BasicSweeper"):
            return None
        params = [f"{key}={value}" for key, value in (hydra["sweeper"].get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *hydra["overrides"]["task"]])
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, HydraException):
        return None
    return jobs, record.get("data") or {}


def unstarted_jobs(folders: list[Path], runs: list[Run]) -> list[Run]:
    """The jobs listed by the multirun.yaml of each sweep under `folders` that left no run folder (with a
    summary.json or metrics.csv) behind, each as a Run with status "not started"."""
    missing = []
    for sweep in sorted({m.parent.resolve() for folder in folders for m in Path(folder).rglob("multirun.yaml")}):
        found = sweep_jobs(sweep)
        if found is None:
            continue
        jobs, data = found
        started = {run.job for run in runs if run.sweep == sweep}
        for number, overrides in enumerate(jobs):
            run = Run(sweep, {"status": NOT_STARTED, "job": number}, [], overrides, sweep)
            if run.job not in started:
                pairs = (o.split("=", 1) for o in overrides if o.startswith("data.") and "=" in o)
                run.data = {**data, **{key.removeprefix("data."): yaml.safe_load(value) for key, value in pairs}}
                missing.append(run)
    return missing
