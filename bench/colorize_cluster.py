"""Scale-out, measured: `koala colorize` on a hand-started Dask cluster against the default.

A user with an existing cluster runs ``dask scheduler`` and ``dask worker`` processes and
points Koala at the scheduler (``--scheduler``). This starts one scheduler and two
single-threaded workers exactly so (the `dask` CLI, ``MALLOC_MMAP_THRESHOLD_`` exported as
docs/deployment.md says), then times the whole `koala colorize` command on the same ~1 MP
scans there and on the embedded default (a LocalCluster the command starts itself), alternating,
each into a fresh output, against one running Prefect server. It checks that every run gives
the same output pixels and the same index (less the columns that say when and how long).

Last line: JSON with each mode's img/s (median, min, max) and whether outputs and index match.

    python bench/colorize_cluster.py [--images 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colorize import scans
from common import REPO, run_measured, start_prefect_server

#: index columns that differ between equal runs (when and how long)
RUN_COLUMNS = {"colorized_at", "seconds"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(env: dict[str, str], workers: int = 2) -> tuple[list[subprocess.Popen], str]:
    """``dask scheduler`` and ``workers`` ``dask worker --nthreads 1``, as a user starts them."""
    from distributed import Client

    bindir = Path(sys.executable).parent
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = [bindir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    procs = [subprocess.Popen([*scheduler, "--no-dashboard"], **quiet)]
    worker = [bindir / "dask", "worker", address, "--nthreads", "1", "--no-dashboard"]
    procs += [subprocess.Popen(worker, **quiet) for _ in range(workers)]
    with Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
    return procs, address


def outputs(out: Path) -> dict[str, np.ndarray]:
    """Decoded pixels of every output image, by path relative to ``out/images``."""
    from PIL import Image

    root = out / "images"
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.*"))}


def stable_index(out: Path):
    """The run's index, less the columns that say when and how long, outputs relative to
    ``out``, in input order."""
    import pandas as pd

    frame = pd.read_parquet(out / "index")
    frame["output_uri"] = frame["output_uri"].str.replace(str(out), "", regex=False)
    keep = [c for c in frame.columns if c not in RUN_COLUMNS]
    return frame[keep].sort_values("input_uri").reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="koala-bench-cluster-"))
    server, api = start_prefect_server(work / "prefect")
    env = dict(
        os.environ,
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(REPO),
        MALLOC_MMAP_THRESHOLD_="33554432",
    )
    scans(work / "scans", args.images)
    procs, address = start_cluster(env)
    rates: dict[str, list[float]] = {"hand_started_cluster": [], "local_cluster": []}
    reference = None
    same_pixels = same_index = True
    try:
        for r in range(args.repeats):
            for mode in rates:
                out = work / f"out-{mode}-{r}"
                cmd = [sys.executable, "-m", "cli.main", "colorize", "--input", str(work / "scans")]
                cmd += ["--output", str(out)]
                cmd += ["--scheduler", address] if mode == "hand_started_cluster" else []
                seconds = run_measured(cmd, env).seconds
                rates[mode].append(args.images / seconds)
                got = (outputs(out), stable_index(out))
                reference = reference or got
                same_pixels &= got[0].keys() == reference[0].keys() and all(
                    np.array_equal(got[0][k], reference[0][k]) for k in reference[0]
                )
                same_index &= got[1].equals(reference[1])
                print(f"{mode} run {r + 1}: {rates[mode][-1]:.2f} img/s", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        server.terminate()
    result = {
        "images": args.images,
        "repeats": args.repeats,
        "cores": os.cpu_count(),
        **{
            f"{mode}_img_s": {
                "median": round(statistics.median(v), 2),
                "min": round(min(v), 2),
                "max": round(max(v), 2),
            }
            for mode, v in rates.items()
        },
        "same_output_pixels": bool(same_pixels),
        "same_index": bool(same_index),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
