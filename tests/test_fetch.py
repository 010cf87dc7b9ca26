"""Downloading over a real loopback HTTP server: errors, timeouts, retries and the size cap."""

from __future__ import annotations

import pytest

from koala.fetch import TRANSIENT_REASONS, fetch, make_client
from koala.images import Rejected
from tests.conftest import FixtureServer
from tests.fixtures import colour_photo, encode

CAP = 2 * 1024 * 1024


def get(server: FixtureServer, path: str) -> bytes:
    with make_client(4) as client:
        return fetch(f"{server.url}/{path}", client, CAP, attempts=2)


def rejected(server: FixtureServer, path: str) -> Rejected:
    with pytest.raises(Rejected) as err:
        get(server, path)
    return err.value


def test_ok_and_404(http_server: FixtureServer, koala_env: None) -> None:
    http_server.files["a.jpg"] = data = encode(colour_photo(1))
    assert get(http_server, "a.jpg") == data
    err = rejected(http_server, "missing.jpg")
    assert err.reason == "download_failed" and err.detail == "HTTP 404 Not Found"
    assert err.reason not in TRANSIENT_REASONS
    assert http_server.hits["missing.jpg"] == 1  # a 404 is final, not retried


def test_transient_503_is_retried(http_server: FixtureServer, koala_env: None) -> None:
    http_server.files["b.jpg"] = data = encode(colour_photo(2))
    assert get(http_server, "flaky/b.jpg") == data
    assert http_server.hits["flaky/b.jpg"] == 2


def test_slow_response_times_out(http_server: FixtureServer, koala_env: None) -> None:
    http_server.files["c.jpg"] = encode(colour_photo(3))
    http_server.slow_seconds = 3.0
    err = rejected(http_server, "slow/c.jpg")
    assert err.reason == "download_timeout" and err.reason in TRANSIENT_REASONS
    assert err.detail == "timed out after 2 attempts (read timeout 1.5 s)"


def test_oversized_download_is_capped(http_server: FixtureServer, koala_env: None) -> None:
    err = rejected(http_server, "huge")
    assert err.reason == "too_large"
    http_server.files["big.png"] = b"\x89PNG" + bytes(CAP + 10)
    assert rejected(http_server, "big.png").reason == "too_large"  # by Content-Length


def test_unsupported_scheme_in_a_list_is_a_rejection(koala_env: None) -> None:
    with make_client(1) as client, pytest.raises(Rejected) as err:
        fetch("gopher://example/x.jpg", client, CAP, attempts=1)
    assert err.value.reason == "unsupported_scheme"
