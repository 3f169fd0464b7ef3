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

from cifarbench.files import atomic_write

log = logging.getLogger(__name__)
FORMAT = "cifarbench-checkpoint/1"


class CheckpointError(RuntimeError):
    """A file that is not a usable cifarbench checkpoint; the message says why."""


def save_checkpoint(path: str | Path, state: dict):
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
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


def rng_state(loader_generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "loader": loader_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, loader_generator: torch.Generator):
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _same_run(a: dict, b: dict) -> bool:
    """Configs equal apart from trainer.resume and the data location."""
    def strip(cfg):
        cfg = json.loads(json.dumps(cfg))
        cfg.get("trainer", {}).pop("resume", None)
        cfg.get("data", {}).pop("root", None)
        return cfg

    return strip(a) == strip(b)


def find_resumable(run_dir: Path, config: dict) -> Path | None:
    """`trainer.resume=auto`: the newest unfinished run with the same config, looked for in this run's
    folder, then beside it (`runs/<date>/*`), then in the other dates of the same `runs/` folder.

    Unfinished = summary.json says running or interrupted and checkpoints/last.pt exists."""
    candidates = [run_dir, *run_dir.parent.glob("*/"), *run_dir.parent.parent.glob("*/*/")]
    found = []
    for folder in {c.resolve() for c in candidates if c.is_dir()}:
        checkpoint, summary = folder / "checkpoints" / "last.pt", folder / "summary.json"
        if not (checkpoint.is_file() and summary.is_file()):
            continue
        try:
            info = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        if info.get("status") in ("running", "interrupted") and _same_run(info.get("config", {}), config):
            found.append((checkpoint.stat().st_mtime, checkpoint))
    return max(found)[1] if found else None


def plain_config(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
