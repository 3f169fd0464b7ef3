"""The training device, precision and compile mode, from `trainer.device`, `trainer.amp`,
`trainer.precision` and `trainer.compile_mode`."""
from __future__ import annotations

import platform

import torch

from cifarbench.core.registry import ConfigError

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "bf16", "fp16", "off")
# trainer.precision: autocast (fp32 weights, ops cast per call) or half (a half network beside fp32 master
# weights, engine/precision.py), each in trainer.amp's dtype.
PRECISIONS = ("autocast", "half")
# torch.compile's modes; reduce-overhead and max-autotune capture CUDA graphs (on CUDA tensors only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ConfigError(f"trainer.device={name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but PyTorch sees no CUDA GPU; use trainer.device=auto or cpu")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    if mode not in AMP_MODES:
        raise ConfigError(f"trainer.amp={mode!r}; choose one of {', '.join(AMP_MODES)}")
    if mode == "auto":  # on CPUs, bf16 autocast is slower than fp32 for these convnets
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError(f"trainer.amp=fp16 needs a CUDA device (got {device.type}); use trainer.amp=bf16 or off")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def check_precision(precision: str, amp_dtype: torch.dtype | None, amp: str, device: torch.device):
    """trainer.precision=half needs a half dtype: raises ConfigError where trainer.amp means fp32."""
    if precision == "half" and amp_dtype is None:
        raise ConfigError(f"trainer.precision=half needs a half dtype, but trainer.amp={amp} means fp32 on "
                          f"{device.type}; set trainer.amp=bf16 (or fp16 on CUDA)")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def parallel_jobs(jobs_per_device, devices: int) -> int:
    """How many jobs `hydra/launcher=parallel` runs at once for `jobs_per_device` jobs on each of `devices`
    CUDA GPUs (a CPU-only machine, 0 GPUs, counts as one device): its `${jobs_per_device:K}` resolver
    (run/naming.py). Raises ConfigError for a value that is not a positive integer."""
    if isinstance(jobs_per_device, bool) or not isinstance(jobs_per_device, int) or jobs_per_device < 1:
        raise ConfigError(f"hydra.launcher.n_jobs=${{jobs_per_device:{jobs_per_device}}}: use a positive integer "
                          f"(the jobs that share one device)")
    return jobs_per_device * max(1, devices)


def job_device(job_num: int | None, devices: int) -> int | None:
    """The CUDA device index that job number `job_num` of a sweep trains on when `devices` GPUs are visible:
    job_num mod devices, round robin, so the parallel launcher's first jobs_per_device × devices jobs put
    jobs_per_device on each GPU (`parallel_jobs`) (None outside a sweep, or with fewer than two GPUs: nothing to choose)."""
    if job_num is None or devices < 2:
        return None
    return job_num % devices
