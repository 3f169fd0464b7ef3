"""Run-folder names that cannot collide or be refused by the file system.

The OmegaConf resolvers of cifarbench's configs, registered when `cifarbench` is imported (before Hydra
composes): two used by `hydra.run.dir`, `hydra.sweep.dir` and `hydra.sweep.subdir` in conf/config.yaml,
and the parallel launcher's job count (conf/hydra/launcher/parallel.yaml):

- `${cifarbench.run_id:}`: an id unique to this process, `<pid>-<6 random hex digits>`, drawn once
  per process, so every folder a process names agrees and two runs started in the same second
  get two folders. Set the environment variable `CIFARBENCH_RUN_ID` to choose it instead. (The ranks
  of a torchrun run need not: only rank 0 names a folder, see `cli.OTHER_RANKS`.)
- `${cifarbench.short:TEXT}`: TEXT as one folder name of at most 120 bytes: `/` becomes `_`, and a
  longer name is cut and ends in a hash of the whole, so distinct override sets stay distinct.
  (The full overrides of a job are in its `.hydra/overrides.yaml`.)
- `${jobs_per_device:K}`: K × the CUDA GPUs this machine has (a CPU-only machine counts as one), the
  workers of `hydra/launcher=parallel` (Hydra's joblib launcher; `hydra.launcher.n_jobs: ${jobs_per_device:2}`
  by default, a plain number sets the count itself). A resolver, not a launcher field, because Hydra
  instantiates launchers from its `hydra_plugins` package only. Job k of the sweep trains on GPU
  k mod (number of GPUs) (core/device.py `job_device`, applied by commands/train.py).
"""
from __future__ import annotations

import functools
import hashlib
import os
import secrets

from omegaconf import OmegaConf

RUN_ID_ENV = "CIFARBENCH_RUN_ID"
MAX_NAME_BYTES = 120  # file systems allow 255 per name; room for Hydra's "<job number>_" and more


def short_name(text: str, limit: int = MAX_NAME_BYTES) -> str:
    """`text` as a single folder name of at most `limit` UTF-8 bytes; unchanged when it already is one."""
    name = text.replace("/", "_")
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    head = name.encode()[:limit - len(digest) - 1].decode(errors="ignore")  # never half a character
    return f"{head}-{digest}"


@functools.cache
def run_id() -> str:
    """This process's run id: $CIFARBENCH_RUN_ID if set, else `<pid>-<random hex>`; the same on every call."""
    return short_name(os.environ.get(RUN_ID_ENV) or f"{os.getpid()}-{secrets.token_hex(3)}")


def jobs_per_device(jobs: int) -> int:
    """`${jobs_per_device:K}`: core/device.py `parallel_jobs` of K and this machine's CUDA GPUs (torch is
    imported when a launcher resolves it, not when cifarbench is). Raises ConfigError for a K that is not
    a positive integer."""
    import torch

    from cifarbench.core.device import parallel_jobs

    return parallel_jobs(jobs, torch.cuda.device_count())


def register_resolvers():
    """Make `cifarbench.run_id`, `cifarbench.short` and `jobs_per_device` available to every config composed
    afterwards.

    The run id is a cached resolution (use_cache): the cache travels with the config Hydra hands to
    each job of a sweep, so launchers that run jobs in other processes (joblib, submitit) still
    put them all in the one sweep folder.
    """
    OmegaConf.register_new_resolver("cifarbench.run_id", run_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("cifarbench.short", short_name, replace=True)
    OmegaConf.register_new_resolver("jobs_per_device", jobs_per_device, replace=True)
