"""`python -m cifarbench` / `cifarbench`: a thin Hydra wrapper around `trainer.train`.

A job that fails records the failure in its summary.json (status "failed" and the error's first
line); inside a multirun the other jobs go on, a single run exits non-zero.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("cifarbench")


def record_failure(run_dir: Path, cfg: DictConfig, error: BaseException):
    from cifarbench.files import atomic_write_json

    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = {"config": OmegaConf.to_container(cfg, resolve=True)}
    first_line = (str(error).strip().splitlines() or [""])[0]
    summary.update(status="failed", error=f"{type(error).__name__}: {first_line}")
    try:
        atomic_write_json(summary_path, summary)
    except OSError:
        pass  # the failure may be that the folder is unwritable; the log still says it


def pin_gpu(job_num: int | None):
    """On a box with several GPUs, job k of a (parallel) sweep trains on GPU k mod count."""
    import torch

    if job_num is not None and torch.cuda.device_count() > 1:
        torch.cuda.set_device(job_num % torch.cuda.device_count())


@hydra.main(version_base="1.3", config_path="pkg://cifarbench.conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """Train one job; returns the objective a Hydra sweeper maximises (`runlog.objective`): the final
    validation accuracy with `data.val_split`, else the final test accuracy (fractions); -inf for a job
    that failed or diverged, so it ranks last (a NaN would fail Optuna's trial and stop its search)."""
    from cifarbench.checkpoint import CheckpointError
    from cifarbench.data import DatasetError
    from cifarbench.files import OutputError
    from cifarbench.registry import ConfigError
    from cifarbench.runlog import objective
    from cifarbench.trainer import train

    hydra_cfg = HydraConfig.get()
    run_dir, multirun = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    pin_gpu(hydra_cfg.job.get("num") if multirun else None)
    try:
        summary = train(cfg, run_dir)
    except (DatasetError, ConfigError, CheckpointError, OutputError) as e:  # the message says it all
        log.error("%s", e)
        record_failure(run_dir, cfg, e)
        if multirun:
            return -math.inf
        sys.exit(2)
    except Exception as e:
        record_failure(run_dir, cfg, e)
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on")
        return -math.inf
    if summary["status"] == "interrupted":
        sys.exit(130)  # Ctrl-C ends a sweep too
    if summary["status"] == "diverged" and not multirun:
        sys.exit(1)
    return objective(summary)


# `cifarbench NAME ...` runs `python -m MODULE ...`; each module has main(argv).
SUBCOMMANDS = {"models": "cifarbench.models.__main__", "report": "cifarbench.report",
               "predict": "cifarbench.predict", "inspect": "cifarbench.diagnostics"}


def main():
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        sys.exit(importlib.import_module(SUBCOMMANDS[sys.argv[1]]).main(sys.argv[2:]))
    run()


if __name__ == "__main__":
    main()
