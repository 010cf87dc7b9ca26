"""fsspec helpers: every path may be a local path or a URL (``s3://``, ``http://``, chained ``tar://m::s3://...``).

Writes are atomic: a local file is written beside its target and renamed over it; a remote object
is written to a local temporary file and uploaded in one put, so readers never see a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec
import pandas as pd
import pyarrow as pa
from fsspec.core import url_to_fs

from koala.errors import KoalaError, one_line
from koala.settings import get_settings


class StorageError(KoalaError):
    """A path that cannot be read or written, with the path and the reason in the message."""


def configure_fsspec() -> None:
    """Give every s3fs instance (chained URLs, Dask workers) the configured endpoint, retries
    and timeouts (:meth:`koala.settings.KoalaSettings.s3_options`)."""
    conf = fsspec.config.conf.setdefault("s3", {})
    conf.pop("endpoint_url", None)
    conf.update(get_settings().s3_options())


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw) -> IO:
    configure_fsspec()
    return fsspec.open(url, mode).open()


def register_webdataset_schemes() -> None:
    """Let ``webdataset.WebDataset`` read ``s3://`` (and other fsspec) URLs through fsspec."""
    from webdataset.gopen import gopen_schemes

    for scheme in ("s3", "s3a", "memory"):
        gopen_schemes[scheme] = _gopen_fsspec


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    """The filesystem path of a local URL."""
    return url[len("file://") :] if url.startswith("file://") else url


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL with ``/``."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the path inside it for ``url``."""
    configure_fsspec()
    return url_to_fs(url)


def exists(url: str) -> bool:
    """Whether a file or directory exists at ``url``."""
    fs, path = get_fs(url)
    return fs.exists(path)


def read_bytes(url: str) -> bytes:
    """The whole content of ``url``."""
    configure_fsspec()
    with fsspec.open(url, "rb") as f:
        return f.read()


def read_parquet(url: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file, or a folder of part files read as one table, through fsspec (so
    ``s3://`` honours the configured endpoint)."""
    fs, path = get_fs(url)
    if fs.isdir(path):
        return pd.read_parquet(path, columns=columns, filesystem=fs)
    with fs.open(path, "rb") as f:
        return pd.read_parquet(f, columns=columns)


def write_parquet(url: str, frame: pd.DataFrame, schema: pa.Schema | None = None) -> None:
    """Write ``frame`` to ``url`` as Parquet, atomically (with ``schema`` when given, so that
    part files of one dataset agree even when a column is all null in one of them)."""
    with atomic_open(url) as f:
        frame.to_parquet(f, index=False, schema=schema)


def list_files(url: str, pattern: str = "*") -> list[str]:
    """Sorted URLs of the files directly under ``url`` whose names match ``pattern``."""
    fs, path = get_fs(url)
    if not fs.exists(path):
        return []
    matches = fs.glob(f"{path.rstrip('/')}/{pattern}")
    return sorted(_unstrip(url, fs, m) for m in matches)


def _unstrip(url: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Give ``path`` (as ``fs`` names it) the protocol of ``url`` back."""
    if is_local(url):
        return path
    return fs.unstrip_protocol(path)


def makedirs(url: str) -> None:
    """Create a directory (no-op on object stores, which have none)."""
    fs, path = get_fs(url)
    fs.makedirs(path, exist_ok=True)


#: a temporary file of another host is stale once it is this old (its writer cannot be asked)
FOREIGN_TEMPORARY_MAX_AGE_S = 3600.0
_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]+$")


def _host() -> str:
    """This machine's name as it appears in temporary file names (no ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def temporary_name(name: str) -> str:
    """``.{name}.tmp-{host}-{pid}-{random}``: the temporary file that becomes ``name``; the
    writer's host and process id let a cleanup tell an in-flight file from an abandoned one."""
    return f".{name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def is_abandoned_temporary(path: Path, max_age_s: float = FOREIGN_TEMPORARY_MAX_AGE_S) -> bool:
    """Whether the temporary file ``path`` was left by a writer that is gone: a process of this
    host that no longer runs, or (another host's, or of an unknown form) older than
    ``max_age_s``."""
    m = _TEMPORARY.match(path.name)
    if m and m["host"] == _host():
        return not _pid_alive(int(m["pid"]))
    try:
        return time.time() - path.stat().st_mtime > max_age_s
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def atomic_open(url: str, mode: str = "wb") -> Iterator[IO]:
    """Open ``url`` for writing so that it appears whole or not at all.

    Local targets are written to a temporary file in the same directory and renamed; remote
    ones are written to a local temporary file and uploaded in one ``put`` when the block ends.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes only, not mode {mode!r}")
    if is_local(url):
        target = Path(local_path(url))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(temporary_name(target.name))
        try:
            with open(tmp, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fs, path = get_fs(url)
    fd, tmp = tempfile.mkstemp(prefix="koala-", suffix=".part")
    os.close(fd)
    try:
        with open(tmp, mode) as f:
            yield f
        fs.put_file(tmp, path)
    finally:
        os.unlink(tmp)


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` atomically."""
    with atomic_open(url, "wb") as f:
        f.write(data)


def create_exclusive(url: str, data: bytes) -> bool:
    """Write ``data`` to ``url`` only if nothing is there, atomically: True when this call
    created it, False when a file was there already (a local hard link of a complete temporary
    file; on S3 a conditional put, ``If-None-Match: *``)."""
    if is_local(url):
        target = Path(local_path(url))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(temporary_name(target.name))
        try:
            tmp.write_bytes(data)
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True
    fs, path = get_fs(url)
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as exc:  # s3fs names a 412 without its condition EINVAL
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True


def remove(url: str, recursive: bool = False) -> None:
    """Delete ``url`` if it exists."""
    fs, path = get_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def remove_stale_temporaries(url: str, max_age_s: float = FOREIGN_TEMPORARY_MAX_AGE_S) -> int:
    """Delete the temporary files that killed writers (a run, a Dask worker) left anywhere
    under a local directory; those of writers still running are kept."""
    if not is_local(url) or not Path(local_path(url)).is_dir():
        return 0
    stale = [
        p for p in Path(local_path(url)).rglob(".*.tmp-*") if is_abandoned_temporary(p, max_age_s)
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def check_writable(url: str) -> None:
    """Fail with a one-line :class:`StorageError` unless a file can be written under ``url``."""
    probe = join(url, f".koala-write-probe-{uuid.uuid4().hex[:8]}")
    if is_local(url) and os.path.isfile(local_path(url)):
        raise StorageError(
            f"output {url!r} is an existing file; give a folder (a new one, or one Koala "
            "wrote before)"
        )
    try:
        makedirs(url)
        atomic_write_bytes(probe, b"ok")
        remove(probe)
    except Exception as exc:
        raise StorageError(f"output {url!r} is not writable: {one_line(exc)}") from exc


def move(src: str, dst: str) -> None:
    """Move a file within one filesystem (creating the target's folder)."""
    fs, path = get_fs(src)
    _, target = get_fs(dst)
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.mv(path, target)
