"""Where a run's numbers came from, for its summary.json: the command to repeat it and the code's git state."""
from __future__ import annotations

import functools
import shlex
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent  # the cifarbench package that is running


def command_line(argv: list[str] | None = None) -> str:
    """The command a user can paste into a shell to run this job again: `python -m cifarbench OVERRIDES`.

    The overrides are `argv` if given, else those of the Hydra job being run (one job of a sweep gets
    its own values; Hydra's settings such as the run folder are left out, so the pasted command makes
    a new folder), else `sys.argv[1:]`. Each is quoted for a POSIX shell where it needs it.
    """
    if argv is None:
        from hydra.core.hydra_config import HydraConfig

        argv = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else sys.argv[1:]
    return shlex.join(["python", "-m", "cifarbench", *argv])


def git_state(path: str | Path = SOURCE) -> dict:
    """{"revision": short commit id, "dirty": whether tracked files differ from it} of the git
    checkout holding `path` (by default the running cifarbench source); both None outside a
    checkout or without git. Untracked files do not make it dirty, as in `git describe --dirty`."""
    revision = _git(path, "rev-parse", "--short", "HEAD")
    changes = _git(path, "status", "--porcelain", "--untracked-files=no") if revision is not None else None
    return {"revision": revision, "dirty": None if changes is None else bool(changes)}


@functools.cache
def running_source_state() -> dict:
    """`git_state()` of the running cifarbench source, read once per process (a sweep's jobs skip two git
    calls each): the code a process runs is the code it imported, whatever happens to the files later.
    The same dict on every call: do not change it."""
    return git_state()


def _git(path: str | Path, *args: str) -> str | None:
    """The stripped output of `git -C path ARGS`, or None if git is missing or fails."""
    try:
        result = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
