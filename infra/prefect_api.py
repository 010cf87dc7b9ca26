"""Which Prefect server a command's flow reports to, found or started without waiting for it.

In order: the configured one (``PREFECT_API_URL``, e.g. a remote server); the local stack's
when it is up (``python -m infra.local_stack up``, found in ``KOALA_STACK_DIR``); else a
temporary local server for this command alone. The temporary server starts in the background
(about 5 s of imports and database checks) while the command loads its model, so a small run
does not wait for one and then the other; :meth:`PrefectApi.ready` joins them.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from infra import local_stack
from infra.local_stack import free_port, terminate
from koala.errors import KoalaError

_STARTED: list[subprocess.Popen] = []
#: most seconds a temporary server may take to answer (imports and database checks take ~5)
SERVER_START_S = 90.0


class PrefectApi:
    """The Prefect API of this command: ``url`` once :meth:`ready` returns."""

    def __init__(self, origin: str, url: str | None = None, dask: str | None = None) -> None:
        self.origin, self.url = origin, url
        #: the local stack's Dask scheduler when the stack is up (for runs that need one)
        self.dask = dask
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.log: Path | None = None
        self._proc: subprocess.Popen | None = None

    def close(self) -> None:
        """Stop the temporary server now (a command that ends before its flow ran)."""
        if self.origin == "temporary" and self._proc is not None:
            stop_server(self._proc)

    def describe(self) -> str:
        """One line on which server this command reports to."""
        if self.origin == "temporary":
            return (
                "Prefect: a temporary local server for this command "
                "(`python -m infra.local_stack up` keeps one running)"
            )
        return f"Prefect: the {self.origin} server {self.url}"

    def _profile_server(self) -> bool:
        """When the active Prefect profile names a server, use it and stop the temporary one."""
        from prefect.settings import PREFECT_API_URL

        configured = PREFECT_API_URL.value()
        if not configured:
            return False
        self.close()
        self.origin, self.url, self._thread = "configured", configured, None
        return True

    def start_temporary(self) -> PrefectApi:
        """Start ``prefect server start`` (no UI) on a free port as a child process, its log
        in a temporary folder, and wait for its health in a background thread; the server
        is stopped when the command exits. Its runs are kept in the default Prefect home
        (``~/.prefect``), so a Prefect server started later shows them."""
        port = free_port()
        log_dir = Path(tempfile.mkdtemp(prefix="koala-prefect-"))
        self.log = log_dir / "prefect-server.log"
        args = ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
        with open(self.log, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args, "--log-level", "ERROR"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the command, which stops it
                env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            )
        _STARTED.append(proc)
        self._proc = proc
        atexit.register(stop_server, proc)
        api = f"http://127.0.0.1:{port}/api"

        def wait() -> None:
            try:
                _wait_healthy(api, proc)
                self.url = api
            except BaseException as exc:  # re-raised by ready()
                self._error = exc

        self._thread = threading.Thread(target=wait, name="prefect-server-start", daemon=True)
        self._thread.start()
        return self

    def ready(self, say: Callable[[str], None] = lambda _line: None) -> str:
        """Wait for the server; its URL becomes this command's Prefect API (the processes it
        starts inherit it)."""
        if self._thread is not None and self._profile_server():
            return str(self.url)
        if self.origin != "configured":
            say(self.describe())
        if self._thread is not None:
            self._thread.join()
            if self._error is not None or not self.url:
                raise KoalaError(
                    f"the temporary Prefect server did not start ({self._error}); "
                    f"its log: {self.log}"
                )
        os.environ["PREFECT_API_URL"] = str(self.url)  # for this process and those it starts
        if "prefect.context" in sys.modules:  # Prefect read its settings already: read again
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()  # every thread's (log and event workers too)
        return str(self.url)


def _wait_healthy(api: str, proc: subprocess.Popen, timeout: float = SERVER_START_S) -> None:
    """Poll ``api``/health until it answers 200; an error when the process ends or time is
    up."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"it exited with code {proc.returncode}")
            try:
                if client.get(f"{api}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"no answer in {timeout:.0f} s")


def started_servers() -> list[subprocess.Popen]:
    """The temporary servers this process started (stopped at exit)."""
    return list(_STARTED)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a temporary server (its whole process group); at the latest when the command
    exits."""
    if proc.poll() is None:
        terminate(proc.pid)
        proc.poll()  # reaped


def stack_exports() -> dict[str, str]:
    """PREFECT_API_URL and KOALA_DASK_ADDRESS of the local stack when it is up, else {}."""
    state = local_stack.load_state()
    if not local_stack.own_server(state):
        return {}
    found = local_stack.exports(state)
    if not local_stack.runs(state.get("dask_pid"), local_stack.DASK_MARKER):
        found.pop("KOALA_DASK_ADDRESS", None)
    found.pop("PREFECT_HOME", None)
    return found


def connect() -> PrefectApi:
    """This command's Prefect API, found without importing Prefect: ``PREFECT_API_URL`` in the
    environment, else the local stack's server when it is up, else a temporary server that
    starts now, beside the command's own work (:meth:`PrefectApi.ready` stops it again when
    the active Prefect profile names a server after all)."""
    if configured := os.environ.get("PREFECT_API_URL"):
        return PrefectApi("configured", configured)
    stack = stack_exports()
    if stack:
        return PrefectApi("local stack", stack["PREFECT_API_URL"], stack.get("KOALA_DASK_ADDRESS"))
    return PrefectApi("temporary").start_temporary()
