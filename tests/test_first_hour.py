"""A newcomer's first hour (issue 27): help that reads at 80 columns, mistakes that are one line
with a way out and fail before Prefect or torch load, a run where every input failed exits
non-zero, a small run in the command's own process beside a temporary Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app
from tests.fixtures import colour_photo, encode

ROOT = Path(__file__).resolve().parent.parent


def _commands(group, path=()):
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_help_reads_at_80_columns() -> None:
    """No line wider than the terminal, nothing cut off, choices listed as values."""
    runner = CliRunner()
    for path in _commands(get_command(app)):
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert out.exit_code == 0, (path, out.output)
        wide = [line for line in out.output.splitlines() if len(line) > 80]
        assert not wide and "…" not in out.output, (path, wide)
        assert "╭" not in out.output, path  # plain help, no boxes that squeeze descriptions
    colorize = runner.invoke(app, ["colorize", "--help"], terminal_width=80).output
    assert "<auto|jpg|png|tiff>" in colorize and "<auto|colour|monochrome>" in colorize


def _one_line(out, code: int = 2) -> str:
    assert out.exit_code == code, out.output
    assert out.output.count("\n") == 1, out.output
    return out.output


def test_typos_get_one_line_with_did_you_mean(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "in").mkdir()
    args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    line = _one_line(runner.invoke(app, ["colorize", *args, "--saturaton", "1.4"]))
    assert "did you mean --saturation?" in line and "--help" in line
    assert "Did you mean 'colorize'?" in _one_line(runner.invoke(app, ["colrize"]))
    (tmp_path / "in" / "a.png").write_bytes(encode(colour_photo(1, (64, 48)).convert("L"), "PNG"))
    line = _one_line(runner.invoke(app, ["colorize", *args, "--model", "chroma_unnet"]))
    assert "did you mean 'chroma_unet'?" in line


def _run_cli_alone(args: list[str]) -> tuple[int, str, bool]:
    """The CLI in a fresh interpreter: exit code, stderr, and whether Prefect or torch was
    imported before it ended (a checkable mistake must fail before either loads)."""
    probe = (
        "import sys\nfrom cli.main import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = any(m in sys.modules for m in ('prefect', 'torch'))\n"
        "print(code, heavy)\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    code, heavy = done.stdout.split()
    return int(code), done.stderr, heavy == "True"


def test_checkable_mistakes_fail_before_anything_heavy_loads(tmp_path: Path) -> None:
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.7\n" + b"x" * 100)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(colour_photo(2, (64, 48)).convert("L"), "PNG"))
    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    cases = {
        "is not an image Koala reads": ["colorize", "--input", str(tmp_path / "notes.pdf"),
                                        "--output", str(tmp_path / "o1")],
        "is an existing file; give a folder": ["colorize", "--input", str(tmp_path / "in"),
                                               "--output", str(taken)],
        "does not exist": ["build-dataset", "--source", str(tmp_path / "missing"),
                           "--out", str(tmp_path / "d")],
    }  # fmt: skip
    for words, args in cases.items():
        code, err, heavy = _run_cli_alone(args)
        assert code == 2 and words in err and err.count("\n") == 1, (args, err)
        assert not heavy, f"{args[0]} loaded Prefect or torch before failing: {err}"


def test_a_run_where_every_input_failed_exits_non_zero(tmp_path: Path, prefect_server) -> None:
    (tmp_path / "in").mkdir()
    whole = encode(colour_photo(3, (200, 150)).convert("L"), "JPEG")
    (tmp_path / "in" / "broken.jpg").write_bytes(whole[: len(whole) // 3])
    args = ["colorize", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1, out.output
    last = out.output.strip().splitlines()[-1]
    assert last.startswith("koala: error: every input failed (1 ") and "contact sheet" in last


def test_a_small_run_stays_in_process_unless_a_cluster_is_asked_for(monkeypatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from infra.runners import colorize_runner
    from koala.settings import get_settings

    monkeypatch.delenv("KOALA_DASK_ADDRESS", raising=False)
    get_settings.cache_clear()
    small = get_settings().in_process_images
    assert isinstance(colorize_runner(small, None, None), ThreadPoolTaskRunner)
    assert isinstance(colorize_runner(small + 1, None, None), DaskTaskRunner)
    assert isinstance(colorize_runner(1, None, 2), DaskTaskRunner)  # --workers: a cluster
    assert isinstance(colorize_runner(1, "tcp://127.0.0.1:1", None), DaskTaskRunner)


def test_the_temporary_prefect_server_starts_beside_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server configured and no local stack: a temporary one starts in the background,
    answers once ready, and is gone when stopped."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra import prefect_api

    monkeypatch.setenv("KOALA_STACK_DIR", str(tmp_path / "no-stack"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no server in the profile
        api = prefect_api.connect()
        assert api.origin == "temporary"
        url = api.ready()
    try:
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert prefect_api.stack_exports() == {}
    finally:
        from prefect.context import refresh_global_settings_context

        api.close()
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        refresh_global_settings_context()  # the later tests' Prefect: not this server
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_small_run_goes_to_the_warm_worker_of_the_local_stack(tmp_path: Path) -> None:
    """With the stack up, `koala colorize` finds it, runs the flow in one of its Dask workers
    (a process that keeps the model loaded for the next run), and the runs are on its server."""
    from tests.conftest import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KOALA_"))}
    env |= {
        "KOALA_STACK_DIR": str(tmp_path / "stack"),
        "KOALA_STACK_PREFECT_PORT": str(free_port()),
        "KOALA_STACK_DASK_PORT": str(free_port()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    box = tmp_path / "box"
    box.mkdir()
    for i in range(2):
        (box / f"s{i}.png").write_bytes(
            encode(colour_photo(40 + i, (160, 120)).convert("L"), "PNG")
        )

    def koala(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", *args]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    up = koala("infra.local_stack", "up")
    assert up.returncode == 0, up.stderr
    try:
        for n in range(2):
            run = koala("cli", "colorize", "--input", str(box), "--output", str(tmp_path / f"o{n}"))
            assert run.returncode == 0, run.stderr
            assert "running on the local stack's Dask cluster" in run.stderr, run.stderr
            assert run.stdout.strip().splitlines()[-1] == "2 colorized; 2 new", run.stdout
        port = env["KOALA_STACK_PREFECT_PORT"]
        runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}).json()
        assert sum(r["name"] != "" and r["state_type"] == "COMPLETED" for r in runs) >= 2
    finally:
        koala("infra.local_stack", "down")


def test_captions_say_what_each_input_was(tmp_path: Path) -> None:
    """A gray file, a gray print stored as RGB, a sepia print and a colour photograph."""
    from types import SimpleNamespace

    from PIL import ImageOps

    from tasks.contact_sheet import input_kind
    from tasks.thumbnails import make_thumb

    gray = colour_photo(5, (200, 150)).convert("L")
    sepia = ImageOps.colorize(gray, (40, 22, 8), (250, 236, 200))
    cases = {
        "grayscale input": ("ok", "L", gray),
        "gray input (stored as colour)": ("ok", "RGB", gray.convert("RGB")),
        "toned input": ("ok", "RGB", sepia),
        "colour photograph": ("skipped_color", "RGB", colour_photo(5, (200, 150))),
    }
    for words, (status, mode, picture) in cases.items():
        thumb = tmp_path / f"{len(words)}.jpg"
        thumb.write_bytes(make_thumb(picture))
        row = SimpleNamespace(status=status, input_mode=mode)
        assert input_kind(row, str(thumb)) == words


def test_a_cold_run_starts_one_prefect_server_and_no_ephemeral_one(tmp_path: Path) -> None:
    """No server configured, no stack: the command's temporary server is the only one; no
    thread of the run falls back to Prefect's own ephemeral server."""
    import time

    import psutil

    box = tmp_path / "box"
    box.mkdir()
    (box / "s.png").write_bytes(encode(colour_photo(60, (160, 120)).convert("L"), "PNG"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KOALA_"))}
    env |= {"KOALA_STACK_DIR": str(tmp_path / "no-stack"), "PYTHONPATH": str(ROOT)}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "cli", "colorize", "--input", str(box)]
    proc = subprocess.Popen(
        [*cmd, "--output", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: set[str] = set()
    while proc.poll() is None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                line = " ".join(child.cmdline())
                if "prefect server start" in line or "prefect.server.api.server" in line:
                    servers.add(line)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "1 colorized; 1 new"
    assert len(servers) == 1 and "prefect server start" in next(iter(servers)), servers
