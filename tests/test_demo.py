"""`make demo` end to end: its own Prefect server (SQLite), a process worker, a Dask
LocalCluster, `prefect deploy` and `prefect deployment run colorize-archive/default`, with the
model shipped in the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

from koala.outputs import read_label
from models.config import FLAGSHIP
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_deployment_on_the_local_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KOALA_"))}
    env |= {
        "KOALA_STACK_DIR": str(tmp_path / "stack"),
        "KOALA_STACK_PREFECT_PORT": str(free_port()),
        "KOALA_STACK_DASK_PORT": str(free_port()),
        "KOALA_DATA_ROOT": str(tmp_path / "no-registry"),  # the shipped model is used
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    out = subprocess.run(
        [sys.executable, "-m", "cli.demo", str(tmp_path / "demo")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "contact sheet:" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last == "15 colorized, 1 skipped as colour, 1 failed; 17 new", last
    colorized = tmp_path / "demo" / "colorized"
    index = pd.read_parquet(colorized / "index")
    status = {Path(u).name: s for u, s in zip(index["input_uri"], index["status"], strict=True)}
    assert status.pop("already_colour.jpg") == "skipped_color"
    assert status.pop("broken_transfer.png") == "failed"
    assert set(status.values()) == {"ok"} and len(status) == 15
    for row in index[index["status"] == "ok"].itertuples():
        data = Path(row.output_uri).read_bytes()
        assert read_label(data) == f"Colorized by Koala {FLAGSHIP}@{row.model_version}"
        assert Image.open(Path(row.output_uri)).size == (row.width, row.height)
    assert (colorized / "contact_sheet.html").exists()
    assert not (tmp_path / "stack" / "stack.json").exists(), "the stack was not stopped"
