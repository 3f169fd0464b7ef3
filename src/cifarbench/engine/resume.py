"""Resume: which checkpoint a run continues from (`trainer.resume`: null, auto or a path), whether a
job of a sweep started again already completed, and putting a checkpoint back into a built Training.
What counts as "the same run" is run/setting.py's one definition."""
from __future__ import annotations

import logging
from pathlib import Path

from cifarbench.core.distributed import World
from cifarbench.core.registry import ConfigError
from cifarbench.run.checkpoint import Checkpoint, load_checkpoint
from cifarbench.run.layout import RunFolder, run_folders
from cifarbench.run.setting import resume_conflicts, same_run

log = logging.getLogger(__name__)
UNFINISHED = ("running", "interrupted")


def find_resumable(run_dir: Path, config: dict, root: Path | None = None) -> Path | None:
    """`trainer.resume=auto`: the last.pt of the newest unfinished run of the same config (run/setting.py's
    `same_run`), looked for in `run_dir` and in every run folder under `root` (the outputs folder), at
    any depth. Unfinished = summary.json says running or interrupted and checkpoints/last.pt exists."""
    folders = [RunFolder(run_dir), *(run_folders(root) if root is not None and Path(root).is_dir() else [])]
    found = []
    for folder in {RunFolder(f.path.resolve()) for f in folders}:
        info = folder.read_summary()
        if (folder.last.is_file() and info is not None and info.get("status") in UNFINISHED
                and same_run(info.get("config", {}), config)):
            found.append((folder.last.stat().st_mtime, folder.last))
    return max(found)[1] if found else None


def completed_run(run_dir: Path, config: dict) -> dict | None:
    """The summary of `run_dir` when it records a completed run of `config` (run/setting.py's `same_run`),
    else None. A sweep started again in its own folder with `trainer.resume=auto` skips such a job."""
    info = RunFolder(run_dir).read_summary()
    if info is None or info.get("status") != "completed" or not same_run(info.get("config", {}), config):
        return None
    return info


def checkpoint_to_resume(resume: str | None, run_dir: Path, config: dict, root: Path | None = None,
                         world: World = World()) -> tuple[str | None, Checkpoint | None]:
    """`trainer.resume` (null, auto or a path) → (path, loaded checkpoint), or (None, None) to start afresh.
    With auto, rank 0 looks in its run folder and under `root` and tells the other ranks what it found;
    every rank then loads the checkpoint itself. Raises ConfigError when the checkpoint's config differs
    in a key that changes what a step means, CheckpointError for a file that is not a usable checkpoint."""
    resume_from = resume
    if resume == "auto":
        resume_from = world.broadcast(find_resumable(run_dir, config, root) if world.main else None)
    if not resume_from:
        if resume == "auto":
            log.info("trainer.resume=auto: no unfinished run with this config; starting afresh")
        return None, None
    checkpoint = load_checkpoint(resume_from)
    changes = resume_conflicts(checkpoint.config, config)
    if changes:
        raise ConfigError(f"cannot resume {resume_from}: the config changes what a step means "
                          f"({'; '.join(changes)}); set these back or start a new run")
    return str(resume_from), checkpoint
