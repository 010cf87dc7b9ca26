"""Read the bytes of one input: over HTTP(S) with timeouts, retries with backoff, a size cap and
an overall deadline; a local file by its plain path; an archive member by its exact name; through
fsspec for every other URI (``s3://``...).

Every failure of one input is a :class:`Rejected` with a reason code and a one-line detail, never
another exception. The reasons in :data:`TRANSIENT_REASONS` may succeed when tried again later.
"""

from __future__ import annotations

import threading
import time
from typing import IO

import fsspec
import httpcore
import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from koala import storage
from koala.errors import Rejected, one_line
from koala.settings import get_settings
from koala.uris import ARCHIVE_SCHEMES, FETCHABLE_SCHEMES, archive_fs, scheme, split_member_uri

USER_AGENT = "koala-ingest/0.1"

#: a download that timed out (a slow or silent server, or past the overall deadline)
DOWNLOAD_TIMEOUT = "download_timeout"
#: a server that could not be reached or answered 408, 429 or 5xx on every attempt
DOWNLOAD_UNAVAILABLE = "download_unavailable"
#: a final answer: an HTTP 4xx, a redirect loop, an undecodable body, a malformed URL
DOWNLOAD_FAILED = "download_failed"
#: reasons worth retrying on a later run; every other reason is final for the same input
TRANSIENT_REASONS = frozenset({DOWNLOAD_TIMEOUT, DOWNLOAD_UNAVAILABLE})

_TIMEOUT_KINDS = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "pool",
}


class ServerBusy(Exception):
    """The server answered 408, 429 or 5xx: worth retrying later."""

    def __init__(self, status: int, phrase: str) -> None:
        super().__init__(f"HTTP {status} {phrase}".strip())


class _DeadlineExceeded(Exception):
    """The download's overall deadline passed."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
        return False
    return isinstance(exc, (ServerBusy, httpx.TransportError))


# The per-thread deadline of the download in progress. Every socket operation of an HTTP client
# made by make_client waits at most until then, so a server that drips headers or body bytes
# (each within the read timeout) is cut off at the deadline too.
_deadline = threading.local()


def _bounded(timeout: float | None) -> float | None:
    """``timeout`` cut to what is left of this thread's download deadline."""
    at = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    _deadline.hit = timeout is None or left < timeout
    if left <= 0:
        raise httpcore.ReadTimeout("download deadline passed")
    return left if _deadline.hit else timeout


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every wait ends at the download's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> _DeadlineStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    """httpcore's socket backend, with streams that honour the download deadline."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = super().connect_tcp(host, port, _bounded(timeout), local_address, socket_options)
        return _DeadlineStream(stream)


def make_client(concurrency: int | None = None) -> httpx.Client:
    """An HTTP client sized for ``concurrency`` parallel downloads."""
    s = get_settings()
    n = concurrency or s.http_concurrency
    client = httpx.Client(
        timeout=httpx.Timeout(s.http_timeout_s),
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
    )
    # httpx has no overall timeout: give its direct (unproxied) connection pool sockets that
    # stop waiting at the deadline (tests/test_fetch.py drips headers to check this holds).
    pool = getattr(client._transport, "_pool", None)
    if isinstance(pool, httpcore.ConnectionPool):
        pool._network_backend = _DeadlineBackend()
    return client


def _read_body(resp: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    declared = int(resp.headers.get("content-length") or 0)
    if declared > max_bytes:
        raise Rejected("too_large", f"{declared:,} bytes exceeds the {max_bytes:,}-byte cap")
    chunks, total = [], 0
    try:
        for chunk in resp.iter_bytes():
            total += len(chunk)
            if total > max_bytes:
                raise Rejected("too_large", f"more than the {max_bytes:,}-byte cap")
            if time.monotonic() >= deadline:
                raise _DeadlineExceeded()
            chunks.append(chunk)
    except httpx.DecodingError as exc:
        encoding = resp.headers.get("content-encoding", "")
        raise Rejected(
            DOWNLOAD_FAILED,
            f"cannot decode the body sent as Content-Encoding {encoding!r} ({_first_line(exc)})",
        ) from None
    return b"".join(chunks)


def _get_capped(client: httpx.Client, url: str, max_bytes: int, deadline: float) -> bytes:
    """One GET attempt, every wait bounded by ``deadline`` (a ``time.monotonic()`` value)."""
    if time.monotonic() >= deadline:
        raise _DeadlineExceeded()
    _deadline.at, _deadline.hit = deadline, False
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code in (408, 429) or resp.status_code >= 500:
                raise ServerBusy(resp.status_code, resp.reason_phrase)
            if resp.status_code >= 400:
                raise Rejected(DOWNLOAD_FAILED, f"HTTP {resp.status_code} {resp.reason_phrase}")
            return _read_body(resp, max_bytes, deadline)
    except httpx.TimeoutException as exc:
        if getattr(_deadline, "hit", False):
            raise _DeadlineExceeded() from exc
        raise
    finally:
        _deadline.at = None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _rejection(exc: Exception, tries: int, client: httpx.Client, budget: float) -> Rejected:
    """The :class:`Rejected` that tells plainly why a download ended with ``exc``."""
    after = f" after {tries} attempts" if tries > 1 else ""
    if isinstance(exc, _DeadlineExceeded):
        return Rejected(DOWNLOAD_TIMEOUT, f"not complete within the {budget:g} s deadline{after}")
    if isinstance(exc, httpx.TimeoutException):
        kind = next((k for t, k in _TIMEOUT_KINDS.items() if isinstance(exc, t)), "network")
        limit = getattr(client.timeout, kind, None)
        what = f"{kind} timeout {limit:g} s" if limit else f"{kind} timeout"
        return Rejected(DOWNLOAD_TIMEOUT, f"timed out{after} ({what})")
    if isinstance(exc, ServerBusy):
        return Rejected(DOWNLOAD_UNAVAILABLE, f"{exc}{after}")
    if isinstance(exc, httpx.TooManyRedirects):
        return Rejected(DOWNLOAD_FAILED, f"too many redirects ({client.max_redirects})")
    if isinstance(exc, httpx.DecodingError):
        return Rejected(DOWNLOAD_FAILED, f"cannot decode the body ({_first_line(exc)})")
    if isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError)):
        return Rejected(DOWNLOAD_FAILED, f"invalid URL ({_first_line(exc)})")
    if _is_transient(exc):  # refused, reset, name not resolved, server hung up
        return Rejected(DOWNLOAD_UNAVAILABLE, f"connection failed{after} ({_first_line(exc)})")
    return Rejected(DOWNLOAD_FAILED, one_line(exc))


def fetch_http(
    client: httpx.Client,
    url: str,
    max_bytes: int,
    attempts: int,
    deadline_s: float | None = None,
) -> bytes:
    """GET ``url``; retry transient failures with exponential backoff, all attempts within
    ``deadline_s`` (default: the ``http_deadline_s`` setting); else :class:`Rejected`."""
    budget = get_settings().http_deadline_s if deadline_s is None else deadline_s
    deadline = time.monotonic() + budget
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=0.2, max=5.0),
        retry=retry_if_exception(lambda e: _is_transient(e) and time.monotonic() < deadline),
        reraise=True,
    )
    try:
        return retrying(_get_capped, client, url, max_bytes, deadline)
    except Rejected:
        raise
    except Exception as exc:
        tries = int(retrying.statistics.get("attempt_number", 1))
        raise _rejection(exc, tries, client, budget) from None


def _read_capped(f: IO[bytes], max_bytes: int) -> bytes:
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Rejected("too_large", f"more than the {max_bytes:,}-byte cap")
    return data


_tar_locks: dict[str, threading.Lock] = {}
_tar_locks_guard = threading.Lock()


def _tar_lock(archive: str) -> threading.Lock:
    """One lock per tar: its members are read through one shared, seeking file object."""
    with _tar_locks_guard:
        return _tar_locks.setdefault(archive, threading.Lock())


def _read_member(uri: str, max_bytes: int) -> bytes:
    """An archive member by its exact name (``../x.jpg``, ``/abs.jpg`` and ``a::b.jpg`` too)."""
    protocol, member, archive = split_member_uri(uri)  # type: ignore[misc]
    fs, _ = archive_fs(archive)
    if protocol == "zip":
        with fs.zip.open(member) as f:
            return _read_capped(f, max_bytes)
    with _tar_lock(archive):
        f = fs.tar.extractfile(member)
        if f is None:
            raise Rejected("not_an_image", "not a regular file in the archive")
        with f:
            return _read_capped(f, max_bytes)


def fetch_fsspec(uri: str, max_bytes: int) -> bytes:
    """Read a local path, an archive member or an fsspec URI, refusing files over ``max_bytes``."""
    try:
        if storage.is_local(uri):  # a plain path: '::' in a file name is part of the name
            with open(storage.local_path(uri), "rb") as f:
                return _read_capped(f, max_bytes)
        if split_member_uri(uri):
            return _read_member(uri, max_bytes)
        storage.configure_fsspec()
        with fsspec.open(uri, "rb") as f:
            return _read_capped(f, max_bytes)
    except Rejected:
        raise
    except (FileNotFoundError, KeyError):
        raise Rejected("missing", "file not found") from None
    except IsADirectoryError:
        raise Rejected("not_an_image", "is a directory") from None
    except PermissionError:
        raise Rejected("read_failed", "permission denied") from None
    except Exception as exc:
        raise Rejected("read_failed", one_line(exc)) from None


def fetch(
    uri: str,
    client: httpx.Client,
    max_bytes: int,
    attempts: int,
    deadline_s: float | None = None,
) -> bytes:
    """The bytes of one input URI, or :class:`Rejected` with the reason; never another error.
    ``deadline_s`` bounds a whole HTTP download (default: the ``http_deadline_s`` setting)."""
    try:
        s = scheme(uri)
        if s in FETCHABLE_SCHEMES:
            return fetch_http(client, uri, max_bytes, attempts, deadline_s)
        if s not in ("file", *ARCHIVE_SCHEMES):
            try:
                fsspec.get_filesystem_class(s)
            except (ValueError, ImportError):
                raise Rejected("unsupported_scheme", f"unsupported URL scheme {s!r}") from None
        return fetch_fsspec(uri, max_bytes)
    except Rejected:
        raise
    except Exception as exc:  # one input never crashes the run
        raise Rejected("read_failed", one_line(exc)) from None


def download_to(url: str, target: str) -> None:
    """Stream a (large) remote file to ``target`` atomically, with retries."""
    s = get_settings()
    for attempt in Retrying(
        stop=stop_after_attempt(s.http_retries),
        wait=wait_exponential_jitter(initial=0.5, max=10.0),
        retry=retry_if_exception(_is_transient),
        reraise=True,
    ):
        with attempt, make_client(1) as client, client.stream("GET", url) as resp:
            if resp.status_code in (408, 429) or resp.status_code >= 500:
                raise ServerBusy(resp.status_code, resp.reason_phrase)
            resp.raise_for_status()
            with storage.atomic_open(target) as out:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
