"""Real components for the tests: a loopback HTTP server, moto's S3 server, a Prefect server."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FixtureServer:
    """Serves ``files`` at ``/<name>``; special routes misbehave on purpose.

    ``/slow/<name>`` waits ``slow_seconds`` first, ``/flaky/<name>`` answers 503 once then the
    file, ``/html`` is a web page, ``/huge`` streams past any sane cap, others are 404.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.slow_seconds = 5.0
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "image/jpeg") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # the client may have given up (timeout tests)

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                server.hits[path] = server.hits.get(path, 0) + 1
                if path.startswith("slow/"):
                    time.sleep(server.slow_seconds)
                    path = path[5:]
                if path.startswith("flaky/"):
                    if server.hits[self.path.lstrip("/")] == 1:
                        return self._send(503, b"busy", "text/plain")
                    path = path[6:]
                if path == "html":
                    return self._send(200, b"<html><body>not an image</body></html>", "text/html")
                if path == "huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()
                    chunk = b"\xff" * (1 << 20)
                    try:
                        for _ in range(64):
                            self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return None
                if path in server.files:
                    return self._send(200, server.files[path])
                return self._send(404, b"not found", "text/plain")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[FixtureServer]:
    server = FixtureServer()
    yield server
    server.close()


@pytest.fixture
def koala_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fast HTTP settings for tests; settings cache cleared before and after."""
    from koala.settings import get_settings

    monkeypatch.setenv("KOALA_HTTP_TIMEOUT_S", "1.5")
    monkeypatch.setenv("KOALA_HTTP_RETRIES", "2")
    monkeypatch.setenv("KOALA_MAX_DOWNLOAD_MB", "8")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) on loopback."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, koala_env: None) -> Iterator[str]:
    """A fresh bucket on the moto server; KOALA_S3_ENDPOINT_URL points at it. Yields s3://bucket."""
    import uuid

    import boto3

    from koala.settings import get_settings

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "KOALA_S3_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    bucket = f"koala-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    from koala.storage import configure_fsspec

    configure_fsspec()
    yield f"s3://{bucket}"
    get_settings.cache_clear()
    monkeypatch.delenv("KOALA_S3_ENDPOINT_URL")
    configure_fsspec()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A dataset root whose registry has the default model's real architecture, untrained."""
    from models.config import FLAGSHIP
    from models.registry import build_model, save_model

    root = tmp_path_factory.mktemp("registry")
    model = build_model(FLAGSHIP, pretrained=False)
    save_model(str(root), FLAGSHIP, model, {"backbone": "efficientnet-lite0"})
    return str(root)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real (temporary, SQLite) Prefect server for the session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory, prefect_server: str):
    """12 photos in train/ and val/ folders, built and preprocessed (tasks called directly);
    one dataset per test module."""
    from flows.build_dataset import build_dataset
    from tasks.preprocess import preprocess_shard, write_features_index
    from tests.fixtures import colour_photo, encode

    root = tmp_path_factory.mktemp("train")
    for i in range(12):
        folder = root / "photos" / ("train" if i < 8 else "val")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i}.jpg").write_bytes(encode(colour_photo(300 + i, (120, 90))))
    data = root / "data"
    build_dataset(sources=[str(root / "photos")], out=str(data), splits="folders", shard_size=4)
    shards = sorted((data / "shards").glob("*.tar"))
    for shard in shards:
        preprocess_shard(str(shard), str(data))
    write_features_index(str(data), "efficientnet-lite0", [s.stem for s in shards])
    return data
