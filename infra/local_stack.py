"""The embedded default stack on one machine: a Prefect server on SQLite, the ``koala-local``
process work pool and its worker, and a Dask LocalCluster that the flows use.

    python -m infra.local_stack up      # start (idempotent); prints the environment to use
    python -m infra.local_stack env     # export lines: PREFECT_API_URL, KOALA_DASK_ADDRESS
    python -m infra.local_stack down    # stop everything it started

State, logs and the SQLite database live in ``.koala/`` (``KOALA_STACK_DIR``). Every part is
found by configuration only: to outgrow one machine, point ``PREFECT_API_URL`` at a remote
Prefect server and ``KOALA_DASK_ADDRESS`` at an existing Dask scheduler instead (see
docs/deployment.md); the deployments and flows stay the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from infra.runners import WORKER_MALLOC_ENV

POOL = "koala-local"
STACK_DIR = Path(os.environ.get("KOALA_STACK_DIR", ".koala")).resolve()
PREFECT_PORT = int(os.environ.get("KOALA_STACK_PREFECT_PORT", "4200"))
DASK_PORT = int(os.environ.get("KOALA_STACK_DASK_PORT", "8786"))
STATE = STACK_DIR / "stack.json"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(STACK_DIR / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_URL=f"http://127.0.0.1:{PREFECT_PORT}/api",
        KOALA_DASK_ADDRESS=f"tcp://127.0.0.1:{DASK_PORT}",
    )
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _spawn(name: str, args: list[str], env: dict[str, str]) -> int:
    log = open(STACK_DIR / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it open
    proc = subprocess.Popen(
        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc.pid


def prefect_server_command(port: int) -> list[str]:
    """The command line of a local Prefect server (SQLite under ``PREFECT_HOME``)."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip


def _wait(what: str, check, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s; see the logs in {STACK_DIR}")


def state() -> dict:
    """What ``up`` started (pids and addresses), with the ones still running."""
    if not STATE.exists():
        return {}
    saved = json.loads(STATE.read_text())
    return {k: v for k, v in saved.items() if not k.endswith("_pid") or _alive(v)}


def serve_dask(workers: int) -> None:
    """Run a process LocalCluster on DASK_PORT until terminated (the stack's Dask)."""
    import dask
    from distributed import LocalCluster

    dask.config.set(
        {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    )
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        scheduler_port=DASK_PORT,
        dashboard_address=":0",
    )
    print(f"Dask LocalCluster {cluster.scheduler_address}, dashboard {cluster.dashboard_link}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        cluster.close()


def up(workers: int | None = None) -> dict[str, str]:
    """Start whatever part of the stack is not running; return the environment to use."""
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    env = _env()
    current = state()
    py = sys.executable
    api = env["PREFECT_API_URL"]
    if "server_pid" not in current:
        current["server_pid"] = _spawn("prefect-server", prefect_server_command(PREFECT_PORT), env)
    _wait("the Prefect server", lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200)
    subprocess.run(
        [py, "-m", "prefect", "work-pool", "create", POOL, "--type", "process", "--overwrite"],
        env=env,
        check=True,
        capture_output=True,
    )
    if "dask_pid" not in current:
        n = str(workers or max(1, os.cpu_count() or 1))
        current["dask_pid"] = _spawn("dask", [py, "-m", "infra.local_stack", "dask", n], env)
    _wait("the Dask cluster", lambda: _dask_ready(env["KOALA_DASK_ADDRESS"]))
    if "worker_pid" not in current:
        current["worker_pid"] = _spawn(
            "prefect-worker",
            [py, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
            env,
        )
    current.update(PREFECT_API_URL=api, KOALA_DASK_ADDRESS=env["KOALA_DASK_ADDRESS"])
    STATE.write_text(json.dumps(current, indent=2))
    return {k: env[k] for k in ("PREFECT_API_URL", "KOALA_DASK_ADDRESS", "PREFECT_HOME")}


def _dask_ready(address: str) -> bool:
    from distributed import Client

    with Client(address, timeout=2) as client:
        return len(client.scheduler_info()["workers"]) > 0


def down() -> None:
    """Stop every process ``up`` started (worker first, then Dask, then the server)."""
    current = state()
    for key in ("worker_pid", "dask_pid", "server_pid"):
        pid = current.get(key)
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                continue
            for _ in range(40):
                if not _alive(pid):
                    break
                time.sleep(0.25)
            else:
                os.killpg(pid, signal.SIGKILL)
    STATE.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    if command == "up":
        env = up(int(argv[1]) if len(argv) > 1 else None)
        print("\n".join(f"export {k}={v}" for k, v in env.items()))
    elif command == "env":
        print(
            "\n".join(
                f"export {k}={v}"
                for k, v in _env().items()
                if k in ("PREFECT_API_URL", "KOALA_DASK_ADDRESS", "PREFECT_HOME")
            )
        )
    elif command == "down":
        down()
    elif command == "dask":
        serve_dask(int(argv[1]))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
