"""The run folder: every path in it is named here, and summary.json has its one reader and writer here.

    <run>/summary.json              what the run is and how it stands (written at its start, at each end)
    <run>/metrics.csv               one row per evaluation
    <run>/checkpoints/last.pt       the latest checkpoint; best.pt: the best evaluation's
    <run>/curves.png, confusion.png, samples.png
    <run>/inspect/                  `cifarbench inspect`'s figures of one of its checkpoints
    <run>/tensorboard/              logger=tensorboard's event files
    <run>/wandb/                    logger=wandb's run (offline: offline-run-*/run-<id>.wandb)
    <run>/.hydra/                   Hydra's record of the job (config.yaml, overrides.yaml)
    <sweep>/.mlflow-servers-down.json  tracking servers a job of the sweep found down, and when (run/trackers.py)

Where run folders themselves go (`hydra.run.dir`, `hydra.sweep.dir`) is the `paths` config's business.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cifarbench.core.files import atomic_write_json

SUMMARY = "summary.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
FIGURES = ("curves.png", "confusion.png", "samples.png")
SERVERS_DOWN = ".mlflow-servers-down.json"  # in a sweep folder: tracking servers a job found down, and when
TRACKER_STORES = {"mlartifacts", "mlruns"}  # MLflow's copies of run files (logger=mlflow) are not runs


@dataclass(frozen=True)
class RunFolder:
    """The paths of the run folder at `path`."""
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder:
        """The run folder a checkpoint file belongs to (`<run>/checkpoints/*.pt`; else the file's folder)."""
        folder = Path(checkpoint).resolve().parent
        return cls(folder.parent if folder.name == CHECKPOINTS else folder)

    summary = property(lambda self: self.path / SUMMARY)
    metrics = property(lambda self: self.path / METRICS)
    last = property(lambda self: self.path / CHECKPOINTS / "last.pt")
    best = property(lambda self: self.path / CHECKPOINTS / "best.pt")
    curves = property(lambda self: self.path / FIGURES[0])
    confusion = property(lambda self: self.path / FIGURES[1])
    samples = property(lambda self: self.path / FIGURES[2])
    inspect = property(lambda self: self.path / "inspect")
    tensorboard = property(lambda self: self.path / "tensorboard")
    wandb = property(lambda self: self.path / "wandb")
    hydra = property(lambda self: self.path / ".hydra")
    overrides = property(lambda self: self.path / ".hydra" / "overrides.yaml")

    def figures(self) -> list[Path]:
        """The run's figures that exist, in FIGURES order."""
        return [self.path / name for name in FIGURES if (self.path / name).is_file()]

    def read_summary(self) -> dict | None:
        """summary.json as a dict, or None when it is absent or unreadable."""
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None

    def write_summary(self, summary: dict):
        """Write summary.json atomically; raises OutputError when the folder cannot be written."""
        atomic_write_json(self.summary, summary)


def run_folders(root: str | Path) -> list[RunFolder]:
    """Every run folder under `root` (one holding summary.json or metrics.csv, not inside a tracker's
    store), `root` itself included, in path order."""
    root = Path(root)
    markers = {*root.rglob(SUMMARY), *root.rglob(METRICS)}
    folders = {m.parent for m in markers if not TRACKER_STORES & set(m.relative_to(root).parts)}
    return [RunFolder(folder) for folder in sorted(folders)]
