"""The operator's terminal: checks before any machinery, the summary wording, quiet logs,
``koala models list`` without arguments, and help on every option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app
from tasks.archive_index import outcome_line
from tests.fixtures import colour_photo, encode, truncated_jpeg

ROOT = Path(__file__).resolve().parent.parent


def test_outcome_line_says_what_happened() -> None:
    counts = {"failed": 1, "ok": 15, "skipped_color": 1}
    assert outcome_line(counts, 17) == "15 colorized, 1 skipped as colour, 1 failed; 17 new"
    assert outcome_line({"ok": 3}, 0) == "3 colorized; 0 new"
    assert outcome_line({}, 0) == "no inputs; 0 new"


def _refuse(*_args, **_kwargs) -> None:
    raise AssertionError("Prefect started although the run had nothing to do or had to fail")


def test_colorize_summary_last_and_rerun_starts_nothing(
    tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "gray.png").write_bytes(encode(colour_photo(1).convert("L"), "PNG"))
    (folder / "colour.jpg").write_bytes(encode(colour_photo(2)))
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    args = ["colorize", "--input", str(folder), "--output", str(tmp_path / "out"), "--workers", "1"]
    env = os.environ | {"PREFECT_API_URL": prefect_server, "PYTHONPATH": str(ROOT)}
    for key in ("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "DASK_LOGGING__DISTRIBUTED"):
        env.pop(key, None)  # the defaults of a fresh terminal
    first = subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert lines[-1] == "1 colorized, 1 skipped as colour, 1 failed; 3 new", first.stdout
    # Dask's workers log to the terminal too: quiet unless --verbose
    assert "distributed." not in first.stderr and "INFO" not in first.stderr, first.stderr
    monkeypatch.setattr("cli.main._ready", _refuse)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines()[-1].endswith("; 0 new"), again.output
    assert again.output.strip().splitlines()[-1].startswith("1 colorized"), again.output


def test_build_dataset_and_train_fail_before_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.main._connect_prefect", _refuse)
    (tmp_path / "empty").mkdir()
    cases = [
        ["build-dataset", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "d")],
        ["build-dataset", "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "d")],
        ["train", "--data", str(tmp_path / "d"), "--models", "vgg"],
        ["train", "--data", str(tmp_path / "d"), "--models", "unet"],
        ["preprocess", "--data", str(tmp_path / "d")],
    ]
    for args in cases:
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2, (args, out.output)
        assert out.output.startswith("koala: error: ") and out.output.count("\n") == 1, out.output


def test_models_list_without_arguments_shows_the_shipped_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from koala.settings import get_settings

    monkeypatch.setenv("KOALA_DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["models", "list"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    from models.registry import SHIPPED, champion

    lines = out.output.splitlines()
    assert lines[0].startswith("shipped with Koala (")
    marked = [line for line in lines if line.lstrip().startswith("* ")]  # the champions
    assert f"* chroma_unet@{champion(SHIPPED, 'chroma_unet')}" in "\n".join(marked)
    assert any(" chroma_unet@20261202T173843544Z-9701e3" in line for line in lines)
    assert str(tmp_path) not in out.output  # no registry there: not mentioned


def _options(command: click.Command, path: tuple[str, ...] = ()):
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _options(sub, (*path, name))
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            yield " ".join(path), param


def test_every_option_has_help() -> None:
    missing = [f"{cmd} --{p.name}" for cmd, p in _options(get_command(app)) if not p.help]
    assert not missing, missing
