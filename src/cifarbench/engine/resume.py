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
UNFINISHED = ("running", "interrupted", "preempted")


def runs_of(config: dict, run_dir: Path, root: Path | None = None) -> list[tuple[float, RunFolder, dict]]:
    """(time of its last write, folder, summary) of every run of `config` (run/setting.py's `same_run`) in
    `run_dir` and in every run folder under `root` (the outputs folder, any depth), newest first; a run
    that a later run in another folder resumed from (its summary's `resumed_from`) is left out: that
    later run carries it on, so neither `trainer.resume=auto` nor the completed-run check looks at it."""
    folders = {RunFolder(f.path.resolve())
               for f in [RunFolder(run_dir), *(run_folders(root) if root is not None and Path(root).is_dir() else [])]}
    summaries = {folder: folder.read_summary() for folder in folders}
    continued = {RunFolder.of_checkpoint(info["resumed_from"]).path for folder, info in summaries.items()
                 if info and info.get("resumed_from")
                 and RunFolder.of_checkpoint(info["resumed_from"]).path != folder.path}
    found = [(max(p.stat().st_mtime for p in (folder.summary, folder.last) if p.is_file()), folder, info)
             for folder, info in summaries.items()
             if info is not None and folder.path not in continued and same_run(info.get("config", {}), config)]
    return sorted(found, key=lambda item: item[0], reverse=True)


def find_resumable(run_dir: Path, config: dict, root: Path | None = None) -> Path | None:
    """`trainer.resume=auto`: the last.pt of the newest unfinished run of `config` (`runs_of`): its
    summary.json says running, interrupted or preempted and checkpoints/last.pt exists; None when there is none."""
    return next((folder.last for _, folder, info in runs_of(config, run_dir, root)
                 if info.get("status") in UNFINISHED and folder.last.is_file()), None)


def completed_run(run_dir: Path, config: dict, root: Path | None = None) -> tuple[Path, dict] | None:
    """(folder, summary) of the newest run of `config` (`runs_of`, in `run_dir` and under `root`) when it
    completed and nothing unfinished of the same config is newer, else None. With `trainer.resume=auto`
    a job of a sweep started again in its own folder (root None), or a single run, is skipped then."""
    runs = [(folder.path, info) for _, folder, info in runs_of(config, run_dir, root)
            if info.get("status") in (*UNFINISHED, "completed")]
    return runs[0] if runs and runs[0][1]["status"] == "completed" else None


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
