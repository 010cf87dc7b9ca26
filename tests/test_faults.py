"""Faults at archive scale (issue 29), each with real components and checked the same way:
every input ends with exactly one row, no file is left partial, and the outputs are
byte-identical to those of a run without the fault.

- object storage that throttles and drops connections: moto's S3 server behind a loopback
  proxy that answers 503 SlowDown / 500 and resets connections (tests/fault_proxy.py);
- a Dask worker dies: one, then both workers of a LocalCluster killed with SIGKILL while they
  write;
- the Prefect server stopped in the middle of a run and started again;
- two runs into one output: two real ``koala colorize`` processes (the second is refused, in
  one line naming the first; a stale lease is taken over);
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flows.colorize import colorize_archive
from infra.local_stack import free_port, prefect_server_command, terminate
from koala import lease, storage
from koala.settings import get_settings
from tests.fault_proxy import FaultProxy
from tests.fixtures import colour_photo, encode

SCANS = 24
ROOT = Path(__file__).resolve().parent.parent


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


def cli(output: Path, folder: Path, registry: str, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "cli.main", "colorize", "--input", str(folder)]
    return [*args, "--output", str(output), "--registry", registry, *extra]


def cli_env(prefect_server: str) -> dict[str, str]:
    return os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PYTHONPATH": str(ROOT),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_koala(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A ``koala`` command running in the background (its stderr kept)."""
    return subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_koala(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """A ``koala`` command run to its end (stdout and stderr kept)."""
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def scans(folder: Path, n: int, size: tuple[int, int] = (160, 120)) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        image = colour_photo(200 + i, size).convert("L")
        (folder / f"s{i:02d}.png").write_bytes(encode(image, "PNG"))
    return folder


def test_a_second_run_into_a_busy_output_is_refused_naming_the_first(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    """Two real ``koala colorize`` processes into one output: the second is refused at once
    with one line naming the first, which ends as if alone; a rerun afterwards has nothing
    to do."""
    folder, out = scans(tmp_path / "in", 16, (400, 300)), tmp_path / "out"
    env = cli_env(prefect_server)
    first = start_koala(cli(out, folder, registry, "--batch-size", "2", "--workers", "1"), env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "index").glob("*.parquet")):
        time.sleep(0.1)
    started = time.time()
    second = run_koala(cli(out, folder, registry), env)
    refused_in = time.time() - started
    assert first.poll() is None, "the first run ended before the second started"
    assert second.returncode == 2, second.stderr
    assert second.stderr.count("\n") == 1 and "is in use by a colorize run" in second.stderr
    assert f"pid {first.pid} on" in second.stderr, second.stderr
    assert refused_in < 30
    assert first.wait(timeout=300) == 0, first.stderr.read()
    index = one_row_each(str(out), 16)
    assert set(index["status"]) == {"ok"}
    assert not list(out.rglob(".*.tmp-*")) and not list((out / lease.LEASE_DIR).iterdir())
    again = run_koala(cli(out, folder, registry), env)
    assert again.returncode == 0 and "0 new" in again.stdout + again.stderr, again.stderr
    one_row_each(str(out), 16)


def test_a_stale_lease_is_taken_over_and_a_live_one_is_not(tmp_path: Path) -> None:
    """A lease whose process is gone (this host) or not renewed for STALE_S (another host) is
    taken over; a renewed one of another host is not."""
    out = str(tmp_path / "out")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    here = {"host": socket.gethostname(), "pid": int(dead.stdout), "command": "killed run"}
    storage.atomic_write_bytes(
        lease._lease_uri(out, 1), json.dumps(here | {"seen": time.time()}).encode()
    )
    with lease.take(out, "test") as held:
        assert held.number == 2 and not storage.exists(lease._lease_uri(out, 1))
    away = {"host": "elsewhere", "pid": 1, "command": "koala colorize"}
    storage.atomic_write_bytes(
        lease._lease_uri(out, 3), json.dumps(away | {"seen": time.time()}).encode()
    )
    with pytest.raises(lease.OutputBusy, match=r"in use by koala colorize \(pid 1 on elsewhere"):
        lease.take(out, "test")
    old = time.time() - lease.STALE_S - 1
    storage.atomic_write_bytes(lease._lease_uri(out, 3), json.dumps(away | {"seen": old}).encode())
    with lease.take(out, "test") as held:
        assert held.number == 4


@pytest.mark.parametrize("where", ["local", "s3"])
def test_exactly_one_of_two_racing_creates_wins(where: str, tmp_path: Path, request) -> None:
    base = str(tmp_path) if where == "local" else request.getfixturevalue("s3")
    target = storage.join(base, "lease-00000001.json")
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda i: storage.create_exclusive(target, b"%d" % i), range(8)))
    assert wins.count(True) == 1
    assert storage.read_bytes(target) == b"%d" % wins.index(True)


@pytest.fixture
def two_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A LocalCluster of two single-threaded worker processes (each with its nanny, which
    starts a killed worker again, as a cluster manager replaces a lost machine); runs use it
    through KOALA_DASK_ADDRESS. Yields a Dask client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        monkeypatch.setenv("KOALA_DASK_ADDRESS", cluster.scheduler_address)
        get_settings.cache_clear()
        yield client
    get_settings.cache_clear()


def kill_writers(out: Path, pids: set[int], kills: int, deadline: float) -> list[int]:
    """SIGKILL the processes among ``pids`` whose temporary files appear under ``out`` (they
    are killed while they write an output, a thumbnail or an index part), ``kills`` of them."""
    killed: list[int] = []
    while len(killed) < kills and time.time() < deadline:
        for tmp in out.rglob(".*.tmp-*"):
            pid = int(tmp.name.split("-")[-2])
            if pid in pids and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                if len(killed) == kills:
                    break
        time.sleep(0.005)
    return killed


@pytest.mark.parametrize("kills", [1, 2], ids=["one-worker", "both-workers"])
def test_workers_killed_as_they_write_lose_nothing(
    kills: int, two_workers, tmp_path: Path, registry: str, prefect_server: str
) -> None:
    """Dask workers killed with SIGKILL in the middle of writing (one, then both): their
    batches run again on the workers the nannies start, and the run ends as a clean run
    does, byte for byte, with no temporary file left."""
    folder = scans(tmp_path / "in", 24, (400, 300))
    clean = colorize_archive(input=str(folder), output=str(tmp_path / "clean"), registry=registry)
    pids = set(two_workers.run(os.getpid).values())
    out = tmp_path / "faulty"
    with ThreadPoolExecutor(1) as pool:
        killer = pool.submit(kill_writers, out, pids, kills, time.time() + 120)
        faulty = colorize_archive(input=str(folder), output=str(out), registry=registry)
        assert len(killer.result()) == kills, "the run ended before its workers were killed"
    assert faulty["counts"] == clean["counts"] == {"ok": 24}
    one_row_each(str(out), 24)
    assert outputs(str(out)) == outputs(str(tmp_path / "clean"))
    assert not list(out.rglob(".*.tmp-*"))


def start_server(home: Path, port: int) -> subprocess.Popen:
    """A real Prefect server (SQLite under ``home``) on ``port``, healthy."""
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen(
        [*prefect_server_command(port), "--no-ui"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    terminate(proc.pid)
    raise AssertionError("the Prefect server did not start")


def wait_for_a_part(out: Path) -> None:
    """Until the run writing ``out`` has finished its first batch (its first index part)."""
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "index").glob("*.parquet")):
        time.sleep(0.1)


def ends_as_a_clean_run(
    out: Path, folder: Path, registry: str, prefect_server: str, inputs: int
) -> None:
    """``out`` holds one row per input and the same bytes as a fault-free run of ``folder``,
    and no temporary file."""
    clean = out.parent / "clean"
    done = run_koala(cli(clean, folder, registry, "--workers", "1"), cli_env(prefect_server))
    assert done.returncode == 0, done.stderr[-3000:]
    one_row_each(str(out), inputs)
    assert outputs(str(out)) == outputs(str(clean))
    assert not list(out.rglob(".*.tmp-*"))


def test_a_run_outlives_a_prefect_server_restart(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    """The Prefect server is stopped in the middle of a ``koala colorize`` run and started
    again (same port and database) a few seconds later: the run goes on (Prefect's client
    retries) and ends as a clean run does."""
    folder, out = scans(tmp_path / "in", 16, (400, 300)), tmp_path / "out"
    port = free_port()
    server = start_server(tmp_path / "prefect", port)
    env = cli_env(f"http://127.0.0.1:{port}/api")
    args = cli(out, folder, registry, "--batch-size", "2", "--workers", "1")
    try:
        run = start_koala(args, env)
        wait_for_a_part(out)
        terminate(server.pid)
        time.sleep(3)
        assert run.poll() is None, "the run ended before the server came back"
        server = start_server(tmp_path / "prefect", port)
        stderr = run.communicate(timeout=300)[1]
    finally:
        terminate(server.pid)
    assert run.returncode == 0, stderr[-3000:]
    ends_as_a_clean_run(out, folder, registry, prefect_server, 16)


def test_a_run_whose_prefect_server_stays_away_stops_in_one_line_and_resumes(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    """The Prefect server is stopped in the middle of a run and does not come back (the
    client's retries cut to one): the command stops with one line naming the server, keeps the
    batches written, and a rerun against a server finishes the rest, as a clean run would."""
    folder, out = scans(tmp_path / "in", 16, (400, 300)), tmp_path / "out"
    port = free_port()
    server = start_server(tmp_path / "prefect", port)
    env = cli_env(f"http://127.0.0.1:{port}/api") | {"PREFECT_CLIENT_MAX_RETRIES": "1"}
    try:
        run = start_koala(cli(out, folder, registry, "--batch-size", "2", "--workers", "1"), env)
        wait_for_a_part(out)
    finally:
        terminate(server.pid)
    stderr = run.communicate(timeout=300)[1]
    assert run.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert f"lost the Prefect server at http://127.0.0.1:{port}/api" in last, stderr[-3000:]
    assert "Traceback" not in stderr
    kept = pd.read_parquet(out / "index")
    assert len(kept) and set(kept["status"]) == {"ok"}  # the batches done (maybe all)
    rerun = run_koala(cli(out, folder, registry, "--workers", "1"), cli_env(prefect_server))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ends_as_a_clean_run(out, folder, registry, prefect_server, 16)
