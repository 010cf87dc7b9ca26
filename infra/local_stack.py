"""The embedded default stack on one machine: a Prefect server on SQLite, the ``koala-local``
process work pool and its worker, and a Dask LocalCluster that the flows use.

    python -m infra.local_stack up      # start what is not running; prints what runs where
    python -m infra.local_stack status  # what runs where (exit 1 when the stack is not up)
    python -m infra.local_stack env     # export lines: PREFECT_API_URL, KOALA_DASK_ADDRESS, ...
    python -m infra.local_stack down    # stop everything it started

State, logs and the SQLite database live in ``.koala/`` (``KOALA_STACK_DIR``). The server is
``prefect server start`` with ``PREFECT_HOME`` in that folder, in its own session, its output
in ``prefect-server.log`` (not ``--background``, which leaves the server writing into pipes
that nobody reads once the starting command exits: its first log line after that can kill
it); ``up`` gives it a random token (the Prefect variable ``koala_stack_token``, also kept in
``stack.json``), and a server counts as the stack's own only when the recorded process is
alive and the server on the recorded port answers with that token, so another program or
another Prefect server on the port is never taken for it.

Ports: 4200 (Prefect) and 8786 (Dask), or a free port when one of those is taken by another
program; ``KOALA_STACK_PREFECT_PORT`` / ``KOALA_STACK_DASK_PORT`` require a port, and ``up``
refuses (one line, exit 2) when it is taken. Every part is found by configuration only: to
outgrow one machine, point ``PREFECT_API_URL`` at a remote Prefect server and
``KOALA_DASK_ADDRESS`` at an existing Dask scheduler instead (see docs/deployment.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

POOL = "koala-local"
TOKEN_VARIABLE = "koala_stack_token"
DEFAULT_PORTS = {"prefect": 4200, "dask": 8786}
PORT_VARIABLES = {"prefect": "KOALA_STACK_PREFECT_PORT", "dask": "KOALA_STACK_DASK_PORT"}
SERVER_MARKER = "prefect server start"  # in the command line of the stack's server process
#: in the command line of a server that ``prefect server start --background`` started (older
#: stacks; stopped with ``prefect server stop``)
BACKGROUND_MARKER = "prefect.server.api.server"
DASK_MARKER = "infra.local_stack dask"
WORKER_MARKER = "worker start --pool"
#: what ``up`` records and ``down`` stops before the server: key, command-line marker, name
#: (``server_pid``: the server of a stack.json written before servers ran in the background)
PARTS = (
    ("worker_pid", WORKER_MARKER, "Prefect worker"),
    ("dask_pid", DASK_MARKER, "Dask cluster"),
    ("server_pid", "prefect server start", "Prefect server (older stack)"),
)


class StackError(RuntimeError):
    """The stack cannot start as configured; the message is one line for the operator."""


def stack_dir() -> Path:
    """Where the stack keeps its state, logs and Prefect home (``KOALA_STACK_DIR``)."""
    return Path(os.environ.get("KOALA_STACK_DIR", ".koala")).resolve()


def _state_file() -> Path:
    return stack_dir() / "stack.json"


def _server_pid_file() -> Path:
    """The PID file that ``prefect server start --background`` writes in ``PREFECT_HOME``."""
    return stack_dir() / "prefect" / "server.pid"


def prefect_server_command(port: int) -> list[str]:
    """The command line of a local Prefect server (SQLite under ``PREFECT_HOME``)."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip


def _env(state: dict) -> dict[str, str]:
    """The environment of the stack's processes and of the flows that use it."""
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(stack_dir() / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if "prefect_port" in state:
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{state['prefect_port']}/api"
    if "dask_port" in state:
        env["KOALA_DASK_ADDRESS"] = f"tcp://127.0.0.1:{state['dask_port']}"
    return env


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound (nothing else holds it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_port(part: str) -> int:
    """The port for ``part`` (``prefect`` or ``dask``): the one its variable requires (refused
    with :class:`StackError` when taken), else the default, or a free one if that is taken."""
    variable = PORT_VARIABLES[part]
    wanted = os.environ.get(variable)
    if wanted:
        if not wanted.isdigit() or not 0 < int(wanted) < 65536:
            raise StackError(f"{variable}={wanted!r} is not a port number")
        if not port_free(int(wanted)):
            raise StackError(
                f"port {wanted} ({variable}) is taken by another program; "
                f"stop it or set {variable} to a free port"
            )
        return int(wanted)
    default = DEFAULT_PORTS[part]
    return default if port_free(default) else free_port()


def runs(pid: int | None, marker: str = "") -> bool:
    """Whether process ``pid`` is running (not a zombie) with ``marker`` in its command line."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and marker in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def load_state() -> dict:
    """What ``up`` recorded in ``stack.json`` (empty when the stack was never started)."""
    path = _state_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(state: dict) -> None:
    _state_file().write_text(json.dumps(state, indent=2))


def own_server(state: dict) -> bool:
    """Whether the stack's Prefect server is up: Prefect's ``server.pid`` is alive and the
    server on the recorded port answers with the recorded token."""
    port, token = state.get("prefect_port"), state.get("token")
    if not (port and token and runs(state.get("prefect_pid"), SERVER_MARKER)):
        return False
    url = f"http://127.0.0.1:{port}/api/variables/name/{TOKEN_VARIABLE}"
    try:
        answer = httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json().get("value") == token


def _wait(what: str, check: Callable[[], object], timeout: float = 90.0) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if result := check():
                return result
        except Exception:
            pass
        time.sleep(0.5)
    raise StackError(f"{what} did not come up in {timeout:.0f} s; see the logs in {stack_dir()}")


def _prefect(args: list[str], state: dict, log: str = "prefect-cli.log") -> None:
    """Run a ``prefect`` command against the stack; a failure is a :class:`StackError`."""
    with open(stack_dir() / log, "ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=_env(state),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the background server outlives this terminal's session
        )
    if done.returncode:
        raise StackError(f"`prefect {' '.join(args)}` failed; see {stack_dir() / log}")


def stop_server(state: dict) -> bool:
    """Stop the stack's Prefect server (and, for an older stack, ``prefect server stop`` when
    the home's ``server.pid`` names a running background server; a stale file is only
    removed); whether one was stopped."""
    own = runs(state.get("prefect_pid"), SERVER_MARKER)
    if own:
        terminate(state["prefect_pid"])
    pid_file = _server_pid_file()
    pid = _read_pid(pid_file)
    stopped = runs(pid, BACKGROUND_MARKER)
    if stopped:
        _prefect(["server", "stop"], state, log="prefect-server.log")
        if not _wait_gone(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return own or stopped


def stop_parts(state: dict, say: Callable[[str], None]) -> None:
    """Stop the worker and Dask that ``state`` records, then the stack's Prefect server."""
    for key, marker, name in PARTS:
        if runs(state.get(key), marker):
            terminate(state[key])
            say(f"{name}: stopped (pid {state[key]})")
    if stop_server(state):
        say(f"Prefect server: stopped (port {state.get('prefect_port', '?')})")


def _set_token(api: str, token: str) -> None:
    """Store ``token`` as the server's ``koala_stack_token`` variable (created or updated)."""
    body = {"name": TOKEN_VARIABLE, "value": token}
    answer = httpx.post(f"{api}/variables/", json=body, timeout=10)
    if answer.status_code == 409:
        answer = httpx.patch(f"{api}/variables/name/{TOKEN_VARIABLE}", json=body, timeout=10)
    answer.raise_for_status()


def start_server(state: dict) -> str:
    """Start the stack's Prefect server (``prefect server start`` on ``state["prefect_port"]``,
    its own session, output to ``prefect-server.log``) and give it a fresh token; a status
    line."""
    state["token"] = secrets.token_hex(16)
    port = state["prefect_port"]
    state["prefect_pid"] = _spawn("prefect-server", prefect_server_command(port), _env(state))
    api = _env(state)["PREFECT_API_URL"]
    _wait("the Prefect server", lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200)
    _set_token(api, state["token"])
    return f"Prefect server: started (pid {state['prefect_pid']}, port {port})"


def _spawn(name: str, args: list[str], env: dict[str, str]) -> int:
    """Start ``args`` in its own session, output to ``name.log`` in the stack folder."""
    with open(stack_dir() / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc.pid


def terminate(pid: int) -> None:
    """SIGTERM the process group ``pid`` leads; SIGKILL it if it lingers."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    if not _wait_gone(pid):
        os.killpg(pid, signal.SIGKILL)


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while runs(pid) and time.time() < deadline:
        time.sleep(0.25)
    return not runs(pid)


def serve_dask(workers: int, port: int) -> None:
    """Run a process LocalCluster on ``port`` until terminated (the stack's Dask)."""
    import dask
    from distributed import LocalCluster

    from infra.runners import WORKER_MALLOC_ENV  # here: reading the stack's state stays light

    dask.config.set(
        {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    )
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=port,
        dashboard_address="127.0.0.1:0",
    )
    print(f"Dask LocalCluster {cluster.scheduler_address}, dashboard {cluster.dashboard_link}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        cluster.close()


def dask_info(address: str) -> dict | None:
    """Workers and dashboard URL of the scheduler at ``address`` once it has a worker."""
    from distributed import Client

    with Client(address, timeout=2) as client:
        info = client.scheduler_info()
    if not info["workers"]:
        return None
    port = info.get("services", {}).get("dashboard")
    dashboard = f"http://127.0.0.1:{port}/status" if port else None
    return {"workers": len(info["workers"]), "dashboard": dashboard}


def start_dask(state: dict, workers: int | None) -> str:
    """The stack's Dask LocalCluster (kept when it runs); a status line."""
    started = not runs(state.get("dask_pid"), DASK_MARKER)
    if started:
        n = str(workers or max(1, os.cpu_count() or 1))
        args = [sys.executable, "-m", "infra.local_stack", "dask", n, str(state["dask_port"])]
        state["dask_pid"] = _spawn("dask", args, _env(state))
    address = _env(state)["KOALA_DASK_ADDRESS"]
    info = _wait("the Dask cluster", lambda: dask_info(address))
    state["dask_dashboard"] = info["dashboard"]
    what = "started" if started else "running"
    pid, n = state["dask_pid"], info["workers"]
    return f"Dask scheduler: {address} ({what}, pid {pid}, {n} worker(s))"


def start_worker(state: dict) -> str:
    """The ``koala-local`` process pool and its Prefect worker (kept when it runs)."""
    _prefect(["work-pool", "create", POOL, "--type", "process", "--overwrite"], state)
    started = not runs(state.get("worker_pid"), WORKER_MARKER)
    if started:
        args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL]
        state["worker_pid"] = _spawn("prefect-worker", [*args, "--type", "process"], _env(state))
    what = "started" if started else "running"
    return f"Prefect worker: pool {POOL} ({what}, pid {state['worker_pid']})"


def up(workers: int | None = None, say: Callable[[str], None] = print) -> dict[str, str]:
    """Start whatever part of the stack is not running, ``say`` what runs where, and return
    the environment to use. Raises :class:`StackError` (before starting anything) when a
    required port is taken."""
    stack_dir().mkdir(parents=True, exist_ok=True)
    state = load_state()
    fresh = not own_server(state)
    if fresh:  # what runs of an earlier stack belongs to a server that is gone
        stop_parts(state, say)
        state = {"prefect_port": choose_port("prefect")}
    if not runs(state.get("dask_pid"), DASK_MARKER):
        state["dask_port"] = choose_port("dask")
    if fresh:
        say(start_server(state))
        _save_state(state)
    else:
        say(f"Prefect server: running (pid {state['prefect_pid']}, port {state['prefect_port']})")
    say(start_dask(state, workers))
    _save_state(state)
    say(start_worker(state))
    _save_state(state)
    for line in describe(state):
        say(line)
    return exports(state)


def exports(state: dict) -> dict[str, str]:
    """PREFECT_API_URL, KOALA_DASK_ADDRESS and PREFECT_HOME of a running stack."""
    env = _env(state)
    return {k: env[k] for k in ("PREFECT_API_URL", "KOALA_DASK_ADDRESS", "PREFECT_HOME")}


def describe(state: dict) -> list[str]:
    """Where to look: the Prefect UI, the Dask dashboard, the logs."""
    dashboard = state.get("dask_dashboard")
    if not dashboard or importlib.util.find_spec("bokeh") is None:  # the page would say so
        dashboard = "not available (it needs bokeh>=3.1.0 installed)"
    return [
        f"Prefect UI: http://127.0.0.1:{state['prefect_port']}",
        f"Dask dashboard: {dashboard}",
        f"stack is up; state and logs in {stack_dir()}; stop it with: "
        "python -m infra.local_stack down",
    ]


def down(say: Callable[[str], None] = print) -> None:
    """Stop every process ``up`` started (worker first, then Dask, then the server)."""
    stop_parts(load_state(), say)
    _state_file().unlink(missing_ok=True)
    say("stack is down")


def main(argv: list[str]) -> int:
    """The command line; 2 on a refused start or an unknown command."""
    command = argv[0] if argv else "up"
    try:
        if command == "up":
            env = up(int(argv[1]) if len(argv) > 1 else None)
            print("\n".join(f"export {k}={v}" for k, v in env.items()))
        elif command in ("env", "status"):
            state = load_state()
            if not own_server(state):
                print("the local stack is not up: python -m infra.local_stack up", file=sys.stderr)
                return 1
            lines = (f"export {k}={v}" for k, v in exports(state).items())
            print("\n".join(lines if command == "env" else describe(state)))
        elif command == "down":
            down()
        elif command == "dask":
            serve_dask(int(argv[1]), int(argv[2]))
        else:
            print(__doc__)
            return 2
    except StackError as exc:
        print(f"local stack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
