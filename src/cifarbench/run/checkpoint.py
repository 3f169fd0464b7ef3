"""The checkpoint: every key it holds is a field of `Checkpoint`, written and read here only.

Saved with `torch.save` atomically (temporary file, then rename) and loaded with
`torch.load(weights_only=True)`: only tensors and plain containers, so a checkpoint from anywhere
cannot run code. The resolved config is stored as plain dicts, the fitted preprocessing as buffers.
Resume (engine/resume.py), `predict`, `inspect` and the recorder all go through `save_checkpoint` /
`load_checkpoint`.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cifarbench.core.files import atomic_write

log = logging.getLogger(__name__)
FORMAT = "cifarbench-checkpoint/1"  # the format version; a change of fields is a new version


class CheckpointError(RuntimeError):
    """A file that is not a usable cifarbench checkpoint; the message says why."""


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly where it stopped, or to predict later.

    model: the plain module's state_dict (never DDP's or torch.compile's wrapper); optimizer, scaler:
    their state_dicts; ema, lookahead: the averagers' state_dicts (None without one; `ema["module"]`
    holds the averaged weights the run evaluated); loader: the data position (DeviceLoader.state_dict,
    rank 0's); window: the training metrics since the last evaluation (TrainStep.state_dict); state:
    the RunState's fields (step, seconds, metrics rows, best accuracy); ranks: per process, its global
    RNG states (`rng`) and augmentation generator state (`augment`; with aug.per_epoch also its state
    at the epoch's start, `augment_epoch`, None otherwise and absent in older checkpoints); config: the resolved config as
    plain dicts; preprocess: the fitted preprocessing (data.preprocess.preprocess_state); classes: the
    class names; loggers: where each tracker writes (so a resume continues the same tracked runs).
    """
    model: dict
    optimizer: dict
    scaler: dict
    ema: dict | None
    lookahead: dict | None
    loader: dict
    window: dict
    state: dict
    ranks: list[dict]
    config: dict
    preprocess: dict
    classes: list[str]
    loggers: dict = field(default_factory=dict)


FIELDS = tuple(f.name for f in dataclasses.fields(Checkpoint))


def save_checkpoint(path: str | Path, checkpoint: Checkpoint):
    """Write `checkpoint` to `path` atomically; raises OutputError."""
    state = {"format": FORMAT, **{name: getattr(checkpoint, name) for name in FIELDS}}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location="cpu") -> Checkpoint:
    """The checkpoint saved at `path`, loaded with weights_only=True (tensors on `map_location`);
    raises CheckpointError naming the problem (no file, not a checkpoint, another format, missing keys)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # what torch.save writes; a photo or a text file is not one
        raise CheckpointError(f"{path} is not a readable checkpoint (torch.save writes a zip archive; this file "
                              f"is not one)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} holds objects other than tensors and plain containers; refusing to "
                              f"unpickle it (weights_only=True): {str(e).splitlines()[0]}") from e
    except Exception as e:  # a truncated file or one of another kind
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifarbench checkpoint (format {FORMAT!r} expected)")
    missing = [name for name in FIELDS if name not in state and name != "loggers"]
    if missing:
        raise CheckpointError(f"{path} is a damaged cifarbench checkpoint: it lacks {', '.join(missing)}")
    return Checkpoint(**{name: state[name] for name in FIELDS if name in state})


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
