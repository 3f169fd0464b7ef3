"""`hydra/launcher=parallel`: Hydra's joblib launcher (jobs side by side in worker processes on this machine),
its worker count given per device: `hydra.launcher.n_jobs: ${jobs_per_device:2}` (the default) runs 2 jobs
per CUDA GPU at once (a machine without one counts as one device), and
`hydra.launcher.n_jobs='${jobs_per_device:8}'` 8 small jobs on each GPU (a plain number still sets the
count itself).

Job k of the sweep trains on GPU k mod (number of GPUs) (core/device.py `job_device`, applied by
commands/train.py before the job touches CUDA), so the first jobs put jobs_per_device on each GPU; the
sweep's leaderboard.md ends with the jobs' aggregate images/s (report/board.py `throughput`).
(Hydra instantiates launchers from its `hydra_plugins` package only, so the count is an OmegaConf
resolver, registered when the training command is imported, not a launcher field.)
"""
from __future__ import annotations

from omegaconf import OmegaConf

from cifarbench.core.registry import ConfigError

RESOLVER = "jobs_per_device"


def parallel_jobs(jobs_per_device, devices: int) -> int:
    """How many jobs run at once for `jobs_per_device` jobs on each of `devices` CUDA GPUs (a CPU-only
    machine, 0 GPUs, counts as one device). Raises ConfigError for a value that is not a positive integer."""
    if isinstance(jobs_per_device, bool) or not isinstance(jobs_per_device, int) or jobs_per_device < 1:
        raise ConfigError(f"hydra.launcher.n_jobs=${{jobs_per_device:{jobs_per_device}}}: use a positive integer "
                          f"(the jobs that share one device)")
    return jobs_per_device * max(1, devices)


def register_jobs_per_device():
    """Register the `${jobs_per_device:K}` resolver (K × the CUDA GPUs this machine has)."""
    if not OmegaConf.has_resolver(RESOLVER):
        def resolve(jobs_per_device) -> int:
            import torch

            return parallel_jobs(jobs_per_device, torch.cuda.device_count())

        OmegaConf.register_new_resolver(RESOLVER, resolve)
