"""What the hardware did during a run and what it is: the peak memory of each evaluation's window (and on
CUDA, where NVML is available, the GPU's utilisation and power), for metrics.csv and the trackers, and
the device's description (name, memory, driver, clocks, CUDA and cuDNN versions) for summary.json.

- Memory, in MiB (2**20 bytes). On CUDA: the peaks of PyTorch's caching allocator on the training device,
  `torch.cuda.max_memory_allocated` (tensors) and `max_memory_reserved` (what the allocator holds from the
  driver), reset after each read, so each row is the peak of its window (training and its evaluation). On
  every device: the process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, the
  kernel's high-water mark since the process started: it never goes down, so a row is the peak so far).
- NVML (`pip install 'cifarbench[nvml]'`: nvidia-ml-py, NVIDIA's own bindings, imported as `pynvml`), on
  CUDA only: `gpu_utilization`, the fraction of the last sample period (1/6 s to 1 s, the driver's) in which
  a kernel ran, read at the end of the window, and `gpu_power_w`, the mean power over the window in watts
  (the energy counter's difference over the wall time; the instantaneous draw where the GPU has no
  energy counter, before Volta). Without NVML, or on a CPU, these are empty cells.

Under several processes each rank measures its own device; rank 0's are recorded.
"""
from __future__ import annotations

import os
import platform
import sys
import time

import torch

try:
    import resource
except ImportError:  # Windows: no getrusage, no max_rss_mib
    resource = None

MIB = 2 ** 20
# metrics.csv's hardware columns (run/metrics.py), empty cells where a device has no such figure
HARDWARE_METRICS = ("max_memory_allocated_mib", "max_memory_reserved_mib", "max_rss_mib", "gpu_utilization",
                    "gpu_power_w")


def peak_rss_mib() -> float | None:
    """The process's peak resident set size so far, in MiB (getrusage's ru_maxrss: kilobytes on Linux, bytes
    on macOS); None where there is no getrusage (Windows)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB


def nvml_handle(device: torch.device):
    """The NVML handle of CUDA `device` (CUDA's index mapped through CUDA_VISIBLE_DEVICES, indices or UUIDs, to
    NVML's), or None on a CPU, without nvidia-ml-py, or where NVML cannot start (no driver library)."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
        entry = visible[index] if index < len(visible) else str(index)
        return (pynvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit()
                else pynvml.nvmlDeviceGetHandleByUUID(entry))
    except Exception:  # ImportError, or pynvml.NVMLError (no driver library, no permission, a MIG slice)
        return None


class HardwareMonitor:
    """Reads what `device` did since the previous `read()` (or since it was made): see the module's
    docstring for each figure and its unit."""

    def __init__(self, device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"
        self.nvml = nvml_handle(device)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self._energy, self._since = self._energy_mj(), time.perf_counter()

    def _energy_mj(self) -> int | None:
        """NVML's energy counter (millijoules since the driver loaded), or None."""
        if self.nvml is None:
            return None
        import pynvml

        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(self.nvml)
        except pynvml.NVMLError:
            return None

    def read(self) -> dict[str, float | None]:
        """The window's figures under HARDWARE_METRICS' names (None where this device has none); starts the
        next window (resets the CUDA peaks)."""
        row: dict[str, float | None] = dict.fromkeys(HARDWARE_METRICS)
        peak = peak_rss_mib()
        row["max_rss_mib"] = None if peak is None else round(peak, 1)
        if self.cuda:
            row["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated(self.device) / MIB, 1)
            row["max_memory_reserved_mib"] = round(torch.cuda.max_memory_reserved(self.device) / MIB, 1)
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.nvml is not None:
            import pynvml

            now, energy = time.perf_counter(), self._energy_mj()
            try:
                row["gpu_utilization"] = pynvml.nvmlDeviceGetUtilizationRates(self.nvml).gpu / 100
                row["gpu_power_w"] = round(
                    (energy - self._energy) / 1000 / (now - self._since) if energy is not None and self._energy is not None
                    else pynvml.nvmlDeviceGetPowerUsage(self.nvml) / 1000, 1)
            except pynvml.NVMLError:
                pass
            self._energy, self._since = energy, now
        return row

    def describe(self) -> dict:
        """summary.json's `hardware`: the device's name and memory (MiB); on CUDA its compute capability
        and, with NVML, the driver version and the SM and memory clocks (MHz: at the run's start, and the
        maximum); the CUDA and cuDNN versions PyTorch was built with; the CPU and its thread count."""
        info: dict = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if self.cuda else None}
        if not self.cuda:
            return info
        properties = torch.cuda.get_device_properties(self.device)
        info.update(gpu=properties.name, memory_mib=round(properties.total_memory / MIB),
                    capability=f"{properties.major}.{properties.minor}")
        if self.nvml is not None:
            import pynvml

            try:
                info["driver"] = _text(pynvml.nvmlSystemGetDriverVersion())
                info["clocks_mhz"] = {
                    name: pynvml.nvmlDeviceGetClockInfo(self.nvml, clock) for name, clock in
                    (("sm", pynvml.NVML_CLOCK_SM), ("memory", pynvml.NVML_CLOCK_MEM))}
                info["max_clocks_mhz"] = {
                    name: pynvml.nvmlDeviceGetMaxClockInfo(self.nvml, clock) for name, clock in
                    (("sm", pynvml.NVML_CLOCK_SM), ("memory", pynvml.NVML_CLOCK_MEM))}
            except pynvml.NVMLError:
                pass
        return info


def _text(value) -> str:
    """NVML strings: bytes in older bindings, str in newer."""
    return value.decode() if isinstance(value, bytes) else value
