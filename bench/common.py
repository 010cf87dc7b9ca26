"""Helpers shared by the benchmarks: a local Prefect server and process measurements."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A local Prefect server, as the embedded default stack runs one; returns (proc, API URL).

    Also exports ``PREFECT_API_URL`` in this process before Prefect is first imported (Prefect
    reads its settings once, at import), so that flows called in-process use this server
    instead of starting a temporary one."""
    import httpx

    port = 4300 + os.getpid() % 500
    api = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = api
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    from infra.local_stack import prefect_server_command

    cmd = prefect_server_command(port)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                return proc, api
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("Prefect server did not start")


class Measured(NamedTuple):
    """What :func:`run_measured` measured of one command."""

    seconds: float  #: wall clock
    peak_mb: float  #: peak RSS, the process and all its descendants summed (sampled every 50 ms)
    cpu_s: float  #: user + system CPU seconds of the process and its (reaped) descendants


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's reaped descendants so far."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def process_cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU seconds of a running process and its reaped children (e.g. a server)."""
    import psutil

    t = psutil.Process(proc.pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def run_measured(cmd: list[str], env: dict[str, str]) -> Measured:
    """Wall seconds, peak RSS and CPU seconds of a command (see :class:`Measured`)."""
    import tempfile

    import psutil

    cpu0 = children_cpu_seconds()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            rss = 0
            for p in [ps, *_children(ps)]:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            peak = max(peak, rss)
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            log.seek(0)
            tail = log.read()[-3000:].decode(errors="replace")
            raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{tail}")
    return Measured(seconds, peak / 2**20, children_cpu_seconds() - cpu0)


def _children(ps) -> list:
    import psutil

    try:
        return ps.children(recursive=True)
    except psutil.Error:
        return []


def summary(values: list[float], digits: int = 3) -> dict[str, float]:
    """Median and spread (min, max) of a figure measured several times."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def make_images(source: Path | None, n: int, folder: Path) -> list[Path]:
    """``n`` distinct JPEGs: crops and flips of the source photos (or scikit-image samples)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= n:
        return existing[:n]
    if source and source.exists():
        bases = [Image.open(p).convert("RGB") for p in sorted(source.rglob("*.jpg"))]
    else:
        from skimage import data

        names = ("astronaut", "chelsea", "coffee", "rocket", "retina")
        bases = [Image.fromarray(getattr(data, k)()).convert("RGB") for k in names]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = bases[i % len(bases)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        variant = img.crop((x, y, x + cw, y + ch))
        if (i // len(bases)) % 2:
            variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        p = folder / f"img{i:05d}.jpg"
        variant.save(p, quality=90)
        out.append(p)
    return out
