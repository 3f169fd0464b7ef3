"""What every dataset shares on its way from the web to the device: find an official file, download it
from the first mirror that serves it, verify its MD5 (only a verified file gets its real name), extract
archives atomically, and keep the decoded uint8 arrays in an `.npz` cache beside the files.

A file that fails its MD5 is moved aside to `*.corrupt` and downloaded again (with data.download=false
the error names it); a cache that cannot be read, or is older than the files it was decoded from, is
decoded again.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from cifarbench.core.files import atomic_write, read_cache, write_cache

log = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    """The dataset is missing, corrupt or could not be fetched; the message says what to do."""


@dataclass(frozen=True)
class OfficialFile:
    """A file as its host publishes it: its name and its MD5 (hex)."""
    name: str
    md5: str


def url_of(mirror: str, name: str) -> str:
    """`name` under a mirror's base URL (with or without its trailing slash)."""
    return f"{mirror.rstrip('/')}/{name}"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(folder: Path, file: OfficialFile, mirrors: tuple[str, ...] | list[str], download: bool, source) -> Path:
    """`folder/file.name`, verified: the file there if its MD5 is right, else downloaded from the first of
    `mirrors` that serves a file with the right MD5. A corrupt file there is moved aside to `*.corrupt`
    first. `source` (the data.datasets.Source fetching it) says what is missing and where to put it, naming
    every file the config needs (`Source.not_found`, `Source.where_to_put_it`).

    Raises DatasetError: the file is missing or corrupt and data.download=false (naming every missing file,
    or the corrupt one with both checksums, and the folder), or no mirror gave a good copy (naming each URL
    and what went wrong).
    """
    path = folder / file.name
    if path.is_file():
        digest = md5sum(path)
        if digest == file.md5:
            return path
        problem = f"{path}: checksum mismatch (MD5 {digest}, expected {file.md5}), the file is corrupt or incomplete"
        if not download:
            raise DatasetError(f"{problem}. Delete it and run again with data.download=true, or replace it "
                               f"with a good copy from {url_of(mirrors[0], file.name)}")
        aside = path.with_name(f"{file.name}.corrupt")
        try:
            path.replace(aside)
        except OSError as e:
            raise DatasetError(f"{problem}, and it could not be moved aside ({e}); delete it") from e
        log.warning("%s; moved it to %s and downloading it again", problem, aside)
    elif not download:
        raise DatasetError(source.not_found(folder, mirrors[0]))
    where_to_put_it, title = source.where_to_put_it(folder, mirrors[0]), source.title
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = url_of(mirror, file.name)
        try:
            # only a verified file ever gets the real name
            return atomic_write(path, lambda tmp: _download(url, tmp, file.md5, title))
        except DatasetError as e:
            failures.append(str(e))
            if len(failures) < len(mirrors):  # (the last failure is in the error that follows)
                log.warning("%s; trying the next mirror", e)
    if len(failures) == 1:
        raise DatasetError(f"{failures[0]}. {where_to_put_it}")
    raise DatasetError(f"no mirror gave a good copy of {file.name} ({'; '.join(failures)}). {where_to_put_it}")


def _download(url: str, tmp: Path, md5: str, title: str):
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out, tqdm(
            total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
            desc=title, disable=None,
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise DatasetError(f"could not download {title} from {url} ({e})") from e
    if (digest := md5sum(tmp)) != md5:
        raise DatasetError(f"checksum mismatch for {url}: MD5 {digest}, expected {md5}. "
                           f"The download is corrupt or incomplete; nothing was kept from it")


def extract_tar(archive: Path, root: Path, folder: str, title: str):
    """Unpack a verified .tar.gz into a temporary folder under `root`, then rename its `folder/` into
    place: a half extraction is never trusted. Raises DatasetError when it cannot be read or lacks `folder/`."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / folder).is_dir():
            raise DatasetError(f"{archive} holds no {folder}/ folder; it is not the {title} python archive")
        shutil.rmtree(root / folder, ignore_errors=True)  # an incomplete or damaged folder
        (tmp / folder).rename(root / folder)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"could not extract {archive} ({e}); delete it and try again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(paths: list[Path]) -> str:
    """Names, sizes and mtimes of the files a cache was decoded from: it is stale when any changes."""
    return ";".join(f"{p.name}:{st.st_size}:{st.st_mtime_ns}" for p, st in ((p, p.stat()) for p in paths))


def cached(cache: Path, sources: list[Path], names: tuple[str, ...],
           decode: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays `names` decoded from the files `sources`: read from the `.npz` cache when the files
    are there and the cache is readable and as new as they are; else `decode()`d (which may fetch or
    replace the files first) and written to the cache (atomically)."""
    if all(path.is_file() for path in sources):
        found = read_cache(cache, ("fingerprint", *names))
        if found and str(found["fingerprint"]) == fingerprint(sources):
            return {name: found[name] for name in names}
    arrays = decode()
    write_cache(cache, {"fingerprint": np.array(fingerprint(sources)), **arrays})
    return arrays
