"""Read the bytes of one input: over HTTP(S) with timeouts, retries with backoff and a size cap,
or through fsspec for every other URI (local, ``s3://``, ``tar://m::...``)."""

from __future__ import annotations

import fsspec
import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from koala import storage
from koala.settings import get_settings
from tasks.images import Rejected
from tasks.sources import FETCHABLE_SCHEMES, scheme

USER_AGENT = "koala-ingest/0.1"


class _Transient(Exception):
    """A failure worth retrying (timeout, connection error, 429 or 5xx)."""


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (_Transient, httpx.TransportError))


def make_client(concurrency: int | None = None) -> httpx.Client:
    """An HTTP client sized for ``concurrency`` parallel downloads."""
    s = get_settings()
    n = concurrency or s.http_concurrency
    return httpx.Client(
        timeout=httpx.Timeout(s.http_timeout_s),
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
    )


def _get_capped(client: httpx.Client, url: str, max_bytes: int) -> bytes:
    with client.stream("GET", url) as resp:
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Transient(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise Rejected("download_failed", f"HTTP {resp.status_code} {resp.reason_phrase}")
        declared = int(resp.headers.get("content-length") or 0)
        if declared > max_bytes:
            raise Rejected("too_large", f"{declared:,} bytes exceeds the {max_bytes:,}-byte cap")
        chunks, total = [], 0
        for chunk in resp.iter_bytes():
            total += len(chunk)
            if total > max_bytes:
                raise Rejected("too_large", f"more than the {max_bytes:,}-byte cap")
            chunks.append(chunk)
        return b"".join(chunks)


def fetch_http(client: httpx.Client, url: str, max_bytes: int, attempts: int) -> bytes:
    """GET ``url``; retry transient failures with exponential backoff, then reject."""
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=0.2, max=5.0),
        retry=retry_if_exception(_is_transient),
        reraise=False,
    )
    try:
        return retrying(_get_capped, client, url, max_bytes)
    except RetryError as err:
        last = err.last_attempt.exception()
        kind = "timeout" if isinstance(last, httpx.TimeoutException) else type(last).__name__
        raise Rejected(
            "download_failed", f"{kind} after {attempts} attempts ({last})".rstrip(" ()")
        ) from None


def fetch_fsspec(uri: str, max_bytes: int) -> bytes:
    """Read ``uri`` through fsspec, refusing files over ``max_bytes``."""
    storage.configure_fsspec()
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise Rejected("missing", "file not found") from None
    except IsADirectoryError:
        raise Rejected("not_an_image", "is a directory") from None
    except Exception as exc:
        raise Rejected("read_failed", f"{type(exc).__name__}: {exc}") from None
    if len(data) > max_bytes:
        raise Rejected("too_large", f"more than the {max_bytes:,}-byte cap")
    return data


def fetch(uri: str, client: httpx.Client, max_bytes: int, attempts: int) -> bytes:
    """The bytes of one input URI, or :class:`Rejected` with the reason."""
    s = scheme(uri)
    if s in FETCHABLE_SCHEMES:
        return fetch_http(client, uri, max_bytes, attempts)
    if s != "file":
        try:
            fsspec.get_filesystem_class(s)
        except (ValueError, ImportError):
            raise Rejected("unsupported_scheme", f"unsupported URL scheme {s!r}") from None
    return fetch_fsspec(uri, max_bytes)


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
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}")
            resp.raise_for_status()
            with storage.atomic_open(target) as out:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
