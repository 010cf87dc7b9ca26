"""``make demo``: the main job on the embedded default stack, end to end.

Writes a small sample archive (scikit-image's grayscale photographs, grayscale and sepia versions
of its colour samples, a 16-bit scan, one colour photograph and one broken file), starts the
local stack (Prefect server on SQLite, process worker, Dask LocalCluster), deploys
``colorize-archive/default``, runs it with ``prefect deployment run``, waits, and prints where the
outputs, the index and the contact sheet are.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from PIL import Image, ImageOps
from skimage import data

GRAY = ("camera", "coins", "moon", "page", "text", "clock", "grass", "brick")
COLOUR_AS_GRAY = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


def write_sample_archive(folder: Path) -> Path:
    """The sample archive under ``folder`` (rewritten identically on every run)."""
    scans = folder / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for name in GRAY:
        Image.fromarray(np.asarray(getattr(data, name)())).save(scans / f"{name}.png")
    for name in COLOUR_AS_GRAY:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        img.convert("L").save(scans / f"{name}_bw.jpg", quality=92)
    toned = ImageOps.colorize(
        Image.fromarray(data.chelsea()).convert("L"), "#2b1d0e", "#f5e6c8", "#8a6a45"
    )
    toned.save(folder / "sepia_print.jpg", quality=92)
    coffee = np.asarray(Image.fromarray(data.coffee()).convert("L"), dtype=np.uint16) * 257
    buf = io.BytesIO()
    tifffile.imwrite(buf, coffee)
    (folder / "coffee_16bit.tif").write_bytes(buf.getvalue())
    Image.fromarray(data.astronaut()).save(folder / "already_colour.jpg", quality=92)
    broken = (scans / "camera.png").read_bytes()
    (folder / "broken_transfer.png").write_bytes(broken[: len(broken) // 3])
    return folder


def _prefect(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "prefect", *args], env=env, check=True)


#: waits for one flow run (argv[1]) to end; exit 0 when it completed
_WAIT_FOR_RUN = """
import sys, time, uuid
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    for _ in range(900):
        state = client.read_flow_run(uuid.UUID(sys.argv[1])).state
        if state is not None and state.is_final():
            print(f"flow run {sys.argv[1]}: {state.name}")
            sys.exit(0 if state.is_completed() else 1)
        time.sleep(1)
sys.exit(f"flow run {sys.argv[1]} did not end within 15 minutes")
"""


def _run_and_watch(*args: str, env: dict[str, str]) -> None:
    """``prefect deployment run ... --watch``, its output passed through; when the watch
    stream closes before the run ends (Prefect's CLI then exits 1), the run's final state is
    read from the API instead, so only a run that did not complete fails the demo."""
    cmd = [sys.executable, "-m", "prefect", "deployment", "run", *args, "--watch"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run_id = None
    for line in proc.stdout or ():
        print(line, end="", flush=True)
        found = re.search(r"UUID: ([0-9a-f-]{36})", line)
        run_id = run_id or (found.group(1) if found else None)
    if proc.wait() == 0:
        return
    if run_id is None:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    subprocess.run([sys.executable, "-c", _WAIT_FOR_RUN, run_id], env=env, check=True)


def main(out_dir: str = "demo-output") -> int:
    """Run the demo; leave the stack running when ``KOALA_DEMO_KEEP_STACK=1``."""
    from infra import local_stack
    from tasks.archive_index import now, outcome_line
    from tasks.colorize_plan import status_counts

    root = Path(out_dir).resolve()
    archive = write_sample_archive(root / "sample-archive")
    output = root / "colorized"
    print("starting the local stack (Prefect server, worker, Dask LocalCluster)...", flush=True)
    env = os.environ | local_stack.up()
    started = now()
    try:
        _prefect("--no-prompt", "deploy", "--name", "colorize-archive/default", env=env)
        _run_and_watch(
            "colorize-archive/default",
            "--param",
            f"input={archive}",
            "--param",
            f"output={output}",
            env=env,
        )
    finally:
        if os.environ.get("KOALA_DEMO_KEEP_STACK") != "1":
            local_stack.down()
    index = pd.read_parquet(output / "index")
    counts = status_counts(index)
    new = int((index["colorized_at"] >= started).sum())  # the rows this run wrote
    print(f"\nmodel:         {index['model'].iloc[0]}@{index['model_version'].iloc[0]}")
    print(f"outputs:       {output / 'images'}")
    print(f"index:         {output / 'index'}  (pandas.read_parquet reads it as one table)")
    print(f"contact sheet: {output / 'contact_sheet.html'}")
    print(outcome_line(counts, new))
    return 0 if counts.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
