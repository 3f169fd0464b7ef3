"""Atomic file writes: a reader (or a crash) never sees half a file; caches that repair themselves; tables as
CSV and Markdown text."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputError(OSError):
    """A file could not be written (unwritable folder, full disk); nothing partial was left behind."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp_path)` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OutputError):
            raise
        raise OutputError(e.errno, f"could not write {path} ({e.strerror or e}); check that the folder is "
                                   f"writable and the disk has space") from e
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def link_or_copy(source: str | Path, target: str | Path):
    """Make `target` (absent, or replaced) hold `source`'s bytes: a hard link, which copies nothing, where
    the file system has them, else a copy. Safe for files only ever replaced whole (`atomic_write`): a
    later replacement of `source` gives it a new inode and leaves `target` as it was."""
    Path(target).unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # no hard links here (some network and FUSE file systems)
        shutil.copyfile(source, target)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


CSV_DIGITS = 6  # significant digits of a float in a report's CSV (accuracies of 10,000 images need 4)


def csv_text(rows: list[dict], columns) -> str:
    """`rows` as CSV text under a header of `columns` (a row's other keys are left out): a float to
    CSV_DIGITS significant digits (0.30400000000000005 → 0.304, -inf as -inf: still a number every CSV
    reader parses), None as an empty cell, anything else as str() writes it."""
    def cell(value):
        return f"{value:.{CSV_DIGITS}g}" if isinstance(value, float) else value

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({column: cell(row.get(column)) for column in columns} for row in rows)
    return buffer.getvalue()


def markdown_table(rows: list[dict], columns, cell: Callable[[dict, str], str] = lambda row, c: str(row[c]),
                   headers: dict[str, str] | None = None) -> str:
    """`rows` as a Markdown (GitHub) table of `columns`, each cell `cell(row, column)` and each header
    `headers[column]` (default: the column's name), a `|` in either escaped as `\\|` so that it cannot
    split a cell. No trailing newline."""
    headers = headers or {}

    def line(cells) -> str:
        return "| " + " | ".join(text.replace("|", "\\|") for text in cells) + " |"

    return "\n".join([line(headers.get(c, c) for c in columns), "|" + "---|" * len(columns),
                      *(line(cell(row, c) for c in columns) for row in rows)])


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_cache(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays `names` of an .npz cache, read in full; None if the file is absent or unreadable.

    An unreadable cache (truncated, overwritten, foreign: BadZipFile, EOFError, ValueError, ...) is
    only a warning: the caller computes the arrays again and `write_cache` replaces the file.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in names}
    except Exception as e:  # a damaged zip or .npy raises many different things
        log.warning("the cache %s is unreadable (%s: %s); computing it again", path, type(e).__name__, e)
        return None


def write_cache(path: Path, arrays: dict[str, np.ndarray]):
    """Save `arrays` as the .npz cache `path`, atomically; a folder that cannot hold it is only a warning."""
    def save(tmp: Path):
        with open(tmp, "wb") as f:  # a file object, so NumPy does not append ".npz" to the name
            np.savez(f, **arrays)

    try:
        atomic_write(path, save)
    except OSError as e:  # a read-only dataset folder still works, just without the cache
        log.warning("could not write the cache %s (%s)", path, e)
