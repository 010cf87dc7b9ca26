"""Ingest's fetches and per-image checks in processes: the same rows as in the task's thread
(served by a loopback HTTP server), and a process that dies is a rejected row for the input
that killed it, never a crashed run."""

from __future__ import annotations

import os

import pytest

from koala.images import DEFAULT_LIMITS
from koala.settings import get_settings
from koala.sources import InputRef
from tasks import ingest
from tests.conftest import FixtureServer
from tests.fixtures import colour_photo, corrupt_jpeg, encode, gray, sepia, truncated_jpeg


def served_inputs(server: FixtureServer) -> list[InputRef]:
    """Colour photographs (JPEG and PNG), monochrome ones and broken files, and a URL that
    answers 404; more than one batch of the check processes."""
    datas = [encode(colour_photo(i, (160 + i, 120))) for i in range(5)]
    datas += [encode(colour_photo(9, (150, 110)), "PNG"), encode(gray(colour_photo(10)))]
    datas += [encode(sepia(colour_photo(11))), corrupt_jpeg(), truncated_jpeg(), b"not an image"]
    datas += [encode(colour_photo(20 + i, (140, 100 + i))) for i in range(ingest.BATCH)]
    server.files.update({f"in{i:02d}.jpg": d for i, d in enumerate(datas)})
    n = len(datas) + 1  # the last one is not served
    return [InputRef(f"in{i:02d}", i, f"{server.url}/in{i:02d}.jpg", server.url) for i in range(n)]


def with_processes(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setenv("KOALA_INGEST_PROCESSES", str(n))
    get_settings.cache_clear()


def pid_of_checker(ref: InputRef, data: bytes, limits) -> tuple[dict, None, None]:
    return {"key": ref.key, "pid": os.getpid()}, None, None


def dies_on_in03(ref: InputRef, data: bytes, limits):
    if ref.key == "in03":
        os._exit(1)  # as a decoder's crash or the kernel's OOM killer would end it
    return ingest.process_input(ref, data, limits)


def rows(checked) -> list[tuple]:
    return [
        ({k: v for k, v in rec.items() if k != "seconds"}, jpg, meta) for rec, jpg, meta in checked
    ]


@pytest.fixture(autouse=True)
def _fresh_settings():
    yield
    get_settings.cache_clear()


def test_checks_in_processes_give_the_rows_of_the_thread(
    monkeypatch: pytest.MonkeyPatch, http_server: FixtureServer
) -> None:
    inputs = served_inputs(http_server)
    with_processes(monkeypatch, 0)
    assert ingest.checks_pool() is None
    inline = rows(ingest.checked_inputs(inputs, DEFAULT_LIMITS))
    with_processes(monkeypatch, 2)
    checked = list(ingest.checked_inputs(inputs, check=pid_of_checker))
    assert [r["key"] for r, _, _ in checked] == [i.key for i in inputs]  # in order
    pids = {r.get("pid") for r, _, _ in checked}  # None: the failed fetch, never sent to a check
    assert pids - {None} and os.getpid() not in pids  # the checks ran in other processes
    in_processes = rows(ingest.checked_inputs(inputs, DEFAULT_LIMITS))
    assert in_processes == inline
    statuses = [r["status"] for r, _, _ in inline]
    assert statuses.count("accepted") == 6 + ingest.BATCH and statuses.count("rejected") == 6
    assert inline[-1][0]["reason"] == "download_failed" and "404" in inline[-1][0]["detail"]
    assert all(http_server.hits[f"in{i:02d}.jpg"] == 3 for i in range(len(inputs) - 1))


def test_a_checker_that_dies_is_a_rejected_row_and_the_rest_go_on(
    monkeypatch: pytest.MonkeyPatch, http_server: FixtureServer
) -> None:
    inputs = served_inputs(http_server)
    with_processes(monkeypatch, 0)
    inline = rows(ingest.checked_inputs(inputs, DEFAULT_LIMITS))
    with_processes(monkeypatch, 2)
    got = rows(ingest.checked_inputs(inputs, DEFAULT_LIMITS, check=dies_on_in03))
    assert [r["key"] for r, _, _ in got] == [r["key"] for r, _, _ in inline]
    killer = got[3][0]
    assert (killer["status"], killer["reason"]) == ("rejected", "unexpected_error")
    assert "died" in killer["detail"] and got[3][1] is None
    assert got[:3] + got[4:] == inline[:3] + inline[4:]  # the others as if nothing happened
    pool = ingest.checks_pool()  # a fresh pool serves the next inputs
    assert pool.submit(os.getpid).result() != os.getpid()
