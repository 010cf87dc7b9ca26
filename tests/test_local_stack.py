"""infra/local_stack.py: ports taken by another program are refused (a required one) or
avoided (a default one) before anything starts, and only the server the stack started itself,
with its token, counts as its own: not a plain socket, not another Prefect server."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from infra import local_stack


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by another program (a listening socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty stack folder; no port required."""
    monkeypatch.setenv("KOALA_STACK_DIR", str(tmp_path / "stack"))
    for variable in local_stack.PORT_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "stack"


@pytest.mark.parametrize("part", ["prefect", "dask"])
def test_up_refuses_a_required_port_that_is_taken_before_starting_anything(
    part: str,
    taken_port: int,
    stack: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    variable = local_stack.PORT_VARIABLES[part]
    monkeypatch.setenv(variable, str(taken_port))
    assert local_stack.main(["up", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"local stack: port {taken_port} ({variable}) is taken by another program; "
        f"stop it or set {variable} to a free port"
    ]
    assert not (stack / "stack.json").exists()
    assert not (stack / "prefect" / "server.pid").exists()


def test_a_taken_default_port_is_replaced_by_a_free_one(
    taken_port: int, stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not local_stack.port_free(taken_port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    monkeypatch.setattr(local_stack, "DEFAULT_PORTS", {"prefect": free, "dask": taken_port})
    assert local_stack.choose_port("prefect") == free  # the default when it is free
    other = local_stack.choose_port("dask")
    assert other != taken_port and local_stack.port_free(other)
    monkeypatch.setenv("KOALA_STACK_DASK_PORT", "http")
    with pytest.raises(local_stack.StackError, match="not a port number"):
        local_stack.choose_port("dask")


def test_status_says_the_stack_is_not_up(stack: Path, capsys: pytest.CaptureFixture) -> None:
    assert local_stack.main(["status"]) == 1
    assert capsys.readouterr().err.strip() == (
        "the local stack is not up: python -m infra.local_stack up"
    )


def test_only_the_server_it_started_with_its_token_is_its_own(
    stack: Path, taken_port: int, prefect_server: str
) -> None:
    stack.mkdir(parents=True)
    state = {"prefect_port": local_stack.choose_port("prefect")}
    try:
        line = local_stack.start_server(state)
        pid = state["prefect_pid"]
        assert line == f"Prefect server: started (pid {pid}, port {state['prefect_port']})"
        assert local_stack.runs(pid, local_stack.SERVER_MARKER)
        assert (stack / "prefect" / "prefect.db").exists()  # its own database
        assert local_stack.own_server(state)
        assert not local_stack.own_server(state | {"token": "0" * 32})
        assert not local_stack.own_server(state | {"prefect_port": taken_port})
        other = urlparse(prefect_server).port  # another Prefect server, same token variable
        assert not local_stack.own_server(state | {"prefect_port": other})
    finally:
        assert local_stack.stop_server(state)
    assert not local_stack.runs(pid)
    assert not local_stack.own_server(state)
    assert not (stack / "prefect" / "server.pid").exists()


def test_a_stale_pid_file_naming_another_process_is_removed_not_obeyed(stack: Path) -> None:
    pid_file = stack / "prefect" / "server.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))  # e.g. after a reboot: the PID is someone else's
    assert not local_stack.stop_server({})  # `prefect server stop` would have killed it
    assert not pid_file.exists()
    assert not local_stack.own_server({"prefect_port": 1, "token": "x"})
