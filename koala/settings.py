"""One typed settings object, read from ``KOALA_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from koala.choices import DEVICES


class KoalaSettings(BaseSettings):
    """Settings shared by every flow; each field maps to ``KOALA_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="KOALA_", env_file=".env", extra="ignore")

    data_root: str = Field(
        "data", description="Default dataset root: a local path or an fsspec URL (s3://...)."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto, Ceph); None means AWS."
    )
    dask_address: str | None = Field(
        None, description="Address of an existing Dask scheduler; None means run locally."
    )
    in_process_images: int = Field(
        16,
        ge=0,
        description="A colorize run of at most this many images runs in the command's own "
        "process (no Dask cluster) unless a scheduler or --workers is given.",
    )
    device: Literal[DEVICES] = Field("auto", description="Torch device for models.")
    http_concurrency: int = Field(
        16,
        ge=1,
        description="Parallel downloads per ingest process "
        "(per ingest task where the tasks' threads fetch: KOALA_INGEST_PROCESSES=0 or Dask).",
    )
    ingest_processes: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 8),
        ge=0,
        description="Processes that fetch and check ingest's inputs (decode, colour judge, "
        "hashes), shared by its tasks, so that the checks use every core; 0 runs them in "
        "the tasks' threads (so do Dask workers, whose processes may not have children).",
    )
    http_timeout_s: float = Field(20.0, gt=0, description="Connect/read timeout per request.")
    http_retries: int = Field(3, ge=1, description="Attempts per URL for transient errors.")
    http_deadline_s: float = Field(
        60.0, gt=0, description="Most seconds for one whole download, all attempts together."
    )
    max_download_mb: float = Field(50.0, gt=0, description="Size cap for one downloaded file.")
    max_input_mb: float = Field(
        1024.0, gt=0, description="Size cap for one file to colorize (archival scans are big)."
    )

    s3_retry_mode: Literal["standard", "adaptive"] = Field(
        "standard",
        description="botocore's retry mode for S3: 503 SlowDown, 500s, throttling and reset "
        "connections are retried with exponential backoff and jitter (at most 20 s a wait); "
        "adaptive also slows the client's own request rate.",
    )
    s3_max_attempts: int = Field(
        10, ge=1, description="Attempts per S3 request (the first included) before it fails."
    )
    s3_timeout_s: float = Field(60.0, gt=0, description="Connect/read timeout per S3 request.")

    def s3_options(self) -> dict:
        """s3fs options for every ``s3://`` URL: the endpoint when one is configured, and
        botocore's retries and timeouts."""
        options: dict = {
            "config_kwargs": {
                "retries": {"max_attempts": self.s3_max_attempts, "mode": self.s3_retry_mode},
                "connect_timeout": self.s3_timeout_s,
                "read_timeout": self.s3_timeout_s,
            }
        }
        if self.s3_endpoint_url:
            options["endpoint_url"] = self.s3_endpoint_url
        return options


@lru_cache(maxsize=1)
def get_settings() -> KoalaSettings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after env changes)."""
    return KoalaSettings()
