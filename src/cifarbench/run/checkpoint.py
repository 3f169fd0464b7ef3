"""Checkpoints: everything a run needs to continue exactly where it stopped, or to predict later.

Saved with `torch.save` atomically (temporary file, then rename) and loaded with
`torch.load(weights_only=True)`: only tensors and plain containers, so a checkpoint from anywhere
cannot run code. The resolved config is stored as plain dicts, the normalisation as buffers.
"""
from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cifarbench.core.files import atomic_write

log = logging.getLogger(__name__)
FORMAT = "cifarbench-checkpoint/1"


class CheckpointError(RuntimeError):
    """A file that is not a usable cifarbench checkpoint; the message says why."""


def save_checkpoint(path: str | Path, state: dict):
    """Write `state` (tensors and plain containers) to `path` atomically; raises OutputError."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The state saved at `path`, loaded with weights_only=True; raises CheckpointError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} holds objects other than tensors and plain containers; refusing to "
                              f"unpickle it (weights_only=True): {str(e).splitlines()[0]}") from e
    except Exception as e:  # a truncated file or one of another kind
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifarbench checkpoint (format {FORMAT!r} expected)")
    return state


def rng_state() -> dict:
    """The global RNG states (CPU, and every CUDA device when there is one) as CPU byte tensors."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict):
    """Undo `rng_state`. The setters take CPU byte tensors only, so tensors a checkpoint loaded with
    `map_location="cuda"` are moved back first."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# What may differ between a checkpoint's config and the run resuming it: where things are and how the
# run is watched, plus how long it trains (trainer.epochs re-plans the schedule). Any other key changes
# what a step means. (A group name stands for all its keys: `logger`, the trackers watching the run.)
RESUMABLE_CHANGES = {"logger", "reported", "trainer.resume", "trainer.epochs", "trainer.budget_min", "trainer.progress",
                     "trainer.eval_every", "trainer.eval_batch_size", "trainer.device", "trainer.compile",
                     "trainer.plots", "trainer.dist_backend", "trainer.dist_timeout_s", "data.root", "data.download",
                     "data.mirrors", "paths"}


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as {dotted key: value}; an empty group is one value ({})."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: dict, current: dict, allowed=frozenset()) -> list[str]:
    """'key: saved → current' for every dotted key whose value differs, except the `allowed` ones (a key
    or a group: `logger` allows `logger.mlflow.tracking_uri`)."""
    old, new = flatten(saved), flatten(current)
    missing = object()
    return [f"{key}: {old.get(key, missing)!r} → {new.get(key, missing)!r}".replace(repr(missing), "(absent)")
            for key in sorted(old.keys() | new.keys())
            if not any(key == a or key.startswith(f"{a}.") for a in allowed)
            and old.get(key, missing) != new.get(key, missing)]


# What may differ between a run's recorded config and the same run started again: the resume switch
# itself, where the data and the runs live, which trackers log it and what a study reported (metadata,
# not training).
SAME_RUN = frozenset({"trainer.resume", "data.root", "paths", "logger", "reported"})


def read_summary(folder: Path) -> dict | None:
    """The summary.json in `folder`, or None when it is absent or unreadable."""
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def find_resumable(run_dir: Path, config: dict) -> Path | None:
    """`trainer.resume=auto`: the newest unfinished run with the same config, looked for in this run's
    folder, then beside it (`runs/<date>/*`), then in the other dates of the same `runs/` folder.

    Unfinished = summary.json says running or interrupted and checkpoints/last.pt exists."""
    candidates = [run_dir, *run_dir.parent.glob("*/"), *run_dir.parent.parent.glob("*/*/")]
    found = []
    for folder in {c.resolve() for c in candidates if c.is_dir()}:
        checkpoint, info = folder / "checkpoints" / "last.pt", read_summary(folder)
        if (checkpoint.is_file() and info is not None and info.get("status") in ("running", "interrupted")
                and not config_changes(info.get("config", {}), config, SAME_RUN)):
            found.append((checkpoint.stat().st_mtime, checkpoint))
    return max(found)[1] if found else None


def completed_run(run_dir: Path, config: dict) -> dict | None:
    """The summary of `run_dir` when it records a completed run of `config` (apart from SAME_RUN keys),
    else None. A sweep started again in its own folder with `trainer.resume=auto` skips such a job."""
    info = read_summary(run_dir)
    if info is None or info.get("status") != "completed" or config_changes(info.get("config", {}), config, SAME_RUN):
        return None
    return info


def plain_config(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
