"""Faults at archive scale (issue 29), each with real components and checked the same way:
every input ends with exactly one row, no file is left partial, and the outputs are
byte-identical to those of a run without the fault.

- object storage that throttles and drops connections: moto's S3 server behind a loopback
  proxy that answers 503 SlowDown / 500 and resets connections (tests/fault_proxy.py);
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from flows.colorize import colorize_archive
from koala import storage
from koala.settings import get_settings
from tests.fault_proxy import FaultProxy
from tests.fixtures import colour_photo, encode

SCANS = 24


def gray_scan(seed: int) -> bytes:
    return encode(colour_photo(seed, (160, 120)).convert("L"), "PNG")


def outputs(output: str) -> dict[str, bytes]:
    """Every colorized image of ``output`` by its name inside ``images/``."""
    images = storage.join(output, "images")
    return {u.rsplit("/", 1)[1]: storage.read_bytes(u) for u in storage.list_files(images)}


def one_row_each(output: str, inputs: int) -> pd.DataFrame:
    """The whole index (every part, nothing deduplicated): one row per input."""
    index = storage.read_parquet(storage.join(output, "index"))
    assert len(index) == inputs and index["input_uri"].is_unique
    return index


@pytest.fixture
def throttling_s3(s3: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """The ``s3`` bucket reached through a proxy that faults 10% of requests; yields
    (bucket, proxy)."""
    with FaultProxy(s3_endpoint, rate=0.1, seed=29) as proxy:
        monkeypatch.setenv("KOALA_S3_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("KOALA_S3_MAX_ATTEMPTS", "8")
        get_settings.cache_clear()
        storage.configure_fsspec()
        yield s3, proxy
    get_settings.cache_clear()


def test_s3_that_throttles_and_resets_loses_nothing(
    throttling_s3: tuple[str, FaultProxy], s3_endpoint: str, registry: str, prefect_server: str
) -> None:
    bucket, proxy = throttling_s3
    fs, _ = storage.get_fs(bucket)
    proxy.rate = 0.0  # the collection is uploaded whole; the faults are for the runs
    for i in range(SCANS):
        fs.pipe(f"{bucket[5:]}/in/box{i % 3}/scan{i:02d}.png", gray_scan(100 + i))
    clean = colorize_archive(input=f"{bucket}/in", output=f"{bucket}/clean", registry=registry)
    proxy.rate = 0.1
    before = proxy.counts["faults"]
    faulty = colorize_archive(input=f"{bucket}/in", output=f"{bucket}/faulty", registry=registry)
    injected = proxy.counts["faults"] - before
    assert injected >= 5, f"only {injected} faults injected: the scenario tested nothing"
    assert faulty["counts"] == clean["counts"] == {"ok": SCANS}
    one_row_each(f"{bucket}/faulty", SCANS)
    assert outputs(f"{bucket}/faulty") == outputs(f"{bucket}/clean")
    proxy.rate = 0.0
    keys = fs.find(f"{bucket[5:]}/faulty")
    assert not [k for k in keys if ".tmp" in k or k.endswith(".part")], keys
