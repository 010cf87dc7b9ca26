"""Ingest benchmark: Koala's build-dataset against img2dataset on the same loopback URL list.

Serves a folder of distinct JPEGs over HTTP on 127.0.0.1, then times, on the same list:
  * ``koala build-dataset`` (full decode, EXIF, RGB, size limits, monochrome test, dedup, shards,
    index, data-quality suite) against a running local Prefect server;
  * ``img2dataset`` (download and pack into WebDataset, no resize), when it is installed
    (``make bench-ingest`` puts it in ``.venv-bench``; an ``img2dataset`` on PATH also works).
It also measures Koala's peak memory on 300 and on all images (inputs are streamed, so the two
should be close). ``--repeats`` alternated pairs (Koala, then img2dataset) give each figure
as median, min and max. The last line printed is a JSON object with the figures.

It also counts CPU seconds (user + system) of each run: Koala's processes with the Prefect
server's share, img2dataset's processes, and this process (the loopback server). With the
per-image checks' cost (bench/ingest_stages.py's passes on a sample of the same images, one
thread), ``floor`` says how fast Koala could be on this machine's cores if fetching and writing
cost it no more CPU than img2dataset's whole run, and every core were busy all the time:
``floor.best_ratio`` under 1.0 means no implementation that keeps these checks can match
img2dataset here.

    python bench/ingest.py [--images 6000] [--repeats 3] [--source ../shared/datasets/bsds500]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, make_images, process_cpu_seconds, run_measured, start_prefect_server


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server with a real server's listen backlog: Python's default of 5 drops
    connections when 32 downloads start at once, and a dropped one stalls its client until
    its read timeout (20 s), which measured the server, not the ingest."""

    request_queue_size = 1024
    daemon_threads = True


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    httpd = LoopbackServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def img2dataset_command() -> list[str] | None:
    exe = shutil.which("img2dataset") or shutil.which(
        "img2dataset", path=str(REPO / ".venv-bench" / "bin")
    )
    return [exe] if exe else None


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def run_koala(args, env: dict, tmp: Path, n: int, server) -> dict:
    """``koala build-dataset`` of the first ``n`` URLs: wall seconds, peak RSS (MB, with its
    processes), the flow's own seconds, CPU seconds (its processes and the Prefect server's)."""
    out = tmp / f"koala-{n}"
    koala = [sys.executable, "-m", "cli.main", "build-dataset", "--shard-size", "1000"]
    server0, self0 = process_cpu_seconds(server), time.process_time()
    secs, peak, cpu = run_measured(
        [*koala, "--source", str(args.work / f"urls-{n}.txt"), "--out", str(out)], env
    )
    server_cpu = process_cpu_seconds(server) - server0
    stats = json.loads((out / "stats.json").read_text())
    print(
        f"koala build-dataset, {n} URLs: {secs:.1f} s wall ({n / secs:.1f} img/s), "
        f"{stats['accepted']} accepted, peak RSS {peak:.0f} MB",
        file=sys.stderr,
    )
    return {
        "koala_s": secs,
        "peak": round(peak, 1),
        "flow_s": stats["seconds"],
        "koala_cpu_s": cpu + server_cpu,
        "prefect_server_cpu_s": server_cpu,
        "loopback_cpu_s": time.process_time() - self0,
    }


def run_img2dataset(args, env: dict, tmp: Path) -> dict:
    """img2dataset on all the URLs (2 processes, 16 threads, no resize): wall and CPU seconds
    (None when it is not installed)."""
    cmd = img2dataset_command()
    if not cmd:
        return {"img2dataset_s": None}
    out = tmp / "img2dataset"
    options = {
        "url_list": str(args.work / f"urls-{args.images}.txt"),
        "input_format": "txt",
        "output_format": "webdataset",
        "output_folder": str(out),
        "resize_mode": "no",
        "processes_count": "2",
        "thread_count": "16",
        "number_sample_per_shard": "1000",
        "enable_wandb": "False",
    }
    self0 = time.process_time()
    secs, peak, cpu = run_measured(
        [*cmd, *(x for k, v in options.items() for x in (f"--{k}", v))], env
    )
    ok = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    print(
        f"img2dataset, {args.images} URLs: {secs:.1f} s wall "
        f"({args.images / secs:.1f} img/s), {ok} downloaded, peak RSS {peak:.0f} MB",
        file=sys.stderr,
    )
    return {
        "img2dataset_s": secs,
        "img2dataset_cpu_s": cpu,
        "i2d_loopback_cpu_s": time.process_time() - self0,
    }


def checks_ms(images: list[Path], n: int = 300) -> float:
    """One thread's milliseconds per image for the per-image checks (bench/ingest_stages.py's
    pass: hash, full decode, monochrome cascade, pixel hash) on ``n`` of the images."""
    from ingest_stages import one_pass

    datas = [p.read_bytes() for p in images[:: max(1, len(images) // n)][:n]]
    one_pass(datas[:4])  # warm-up: imports, the judge's session
    return sum(one_pass(datas)[0].values())


def floor(runs: list[dict], images: int, ms: float) -> dict:
    """The fastest Koala could be here: img2dataset's CPU plus the checks', on every core."""
    cores = os.cpu_count() or 1
    i2d_cpu = statistics.median(r["img2dataset_cpu_s"] for r in runs)
    i2d_s = statistics.median(r["img2dataset_s"] for r in runs)
    seconds = (i2d_cpu + images * ms / 1000) / cores
    return {
        "cores": cores,
        "checks_ms_per_image": round(ms, 2),
        "img2dataset_cpu_s": round(i2d_cpu, 1),
        "koala_floor_s": round(seconds, 1),
        "best_ratio": round(i2d_s / seconds, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--small", type=int, default=300)
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared/datasets/bsds500")
    ap.add_argument("--work", type=Path, default=REPO / "bench-output" / "ingest")
    ap.add_argument("--repeats", type=int, default=3, help="alternated Koala/img2dataset pairs")
    args = ap.parse_args()

    images = make_images(args.source, args.images, args.work / "images")
    httpd, base = serve(args.work / "images")
    for n in (args.small, args.images):
        (args.work / f"urls-{n}.txt").write_text("\n".join(f"{base}/{p.name}" for p in images[:n]))
    tmp = Path(tempfile.mkdtemp(prefix="koala-bench-"))
    server, api = start_prefect_server(tmp / "prefect")
    env = dict(
        os.environ,
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    result: dict = {"images": args.images, "repeats": args.repeats}
    runs: list[dict] = []
    try:
        small = run_koala(args, env, tmp, args.small, server)
        result["peak_rss_mb"] = {str(args.small): small["peak"]}
        for r in range(args.repeats):  # alternated pairs: Koala, then img2dataset
            run = run_koala(args, env, tmp / f"r{r}", args.images, server)
            run.update(run_img2dataset(args, env, tmp / f"r{r}"))
            runs.append(run)
            result["peak_rss_mb"][str(args.images)] = max(
                run["peak"], *result["peak_rss_mb"].values()
            )
        result["koala_img_s"] = spread([args.images / r["koala_s"] for r in runs])
        result["koala_flow_seconds"] = spread([r["flow_s"] for r in runs])
        for key in ("koala_cpu_s", "prefect_server_cpu_s", "loopback_cpu_s"):
            result[key] = spread([r[key] for r in runs])
        if runs[0]["img2dataset_s"] is None:
            print("img2dataset is not installed (make bench-ingest installs it): no comparison")
            result["img2dataset_img_s"] = result["ratio"] = None
        else:
            result["img2dataset_img_s"] = spread([args.images / r["img2dataset_s"] for r in runs])
            result["ratio"] = spread([r["img2dataset_s"] / r["koala_s"] for r in runs])
            for key in ("img2dataset_cpu_s", "i2d_loopback_cpu_s"):
                result[key] = spread([r[key] for r in runs])
            result["floor"] = floor(runs, args.images, checks_ms(images))
    finally:
        server.terminate()
        httpd.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
