"""Ingest benchmark: Koala's build-dataset against img2dataset on the same loopback URL list.

Serves a folder of distinct JPEGs over HTTP on 127.0.0.1, then times, on the same list:
  * ``koala build-dataset`` (full decode, EXIF, RGB, size limits, monochrome test, dedup, shards,
    index, data-quality suite) against a running local Prefect server;
  * ``img2dataset`` (download and pack into WebDataset, no resize), when it is installed
    (``make bench-ingest`` puts it in ``.venv-bench``; an ``img2dataset`` on PATH also works).
It also measures Koala's peak memory on 300 and on all images (inputs are streamed, so the two
should be close). ``--repeats`` alternated pairs (Koala, then img2dataset) give each figure
as median, min and max. The last line printed is a JSON object with the figures.

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
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, run_measured, start_prefect_server
from PIL import Image


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server with a real server's listen backlog: Python's default of 5 drops
    connections when 32 downloads start at once, and a dropped one stalls its client until
    its read timeout (20 s), which measured the server, not the ingest."""

    request_queue_size = 1024
    daemon_threads = True


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def make_images(source: Path | None, n: int, folder: Path) -> list[Path]:
    """``n`` distinct JPEGs: crops and flips of the source photos (or scikit-image samples)."""
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


def run_koala(args, env: dict, tmp: Path, n: int) -> tuple[float, float, float]:
    """``koala build-dataset`` of the first ``n`` URLs: wall seconds, peak RSS (MB, with its
    processes), the flow's own seconds."""
    out = tmp / f"koala-{n}"
    koala = [sys.executable, "-m", "cli.main", "build-dataset", "--shard-size", "1000"]
    secs, peak = run_measured(
        [*koala, "--source", str(args.work / f"urls-{n}.txt"), "--out", str(out)], env
    )
    stats = json.loads((out / "stats.json").read_text())
    print(
        f"koala build-dataset, {n} URLs: {secs:.1f} s wall ({n / secs:.1f} img/s), "
        f"{stats['accepted']} accepted, peak RSS {peak:.0f} MB",
        file=sys.stderr,
    )
    return secs, round(peak, 1), stats["seconds"]


def run_img2dataset(args, env: dict, tmp: Path) -> float | None:
    """img2dataset on all the URLs (2 processes, 16 threads, no resize): wall seconds."""
    cmd = img2dataset_command()
    if not cmd:
        return None
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
    secs, peak = run_measured([*cmd, *(x for k, v in options.items() for x in (f"--{k}", v))], env)
    ok = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    print(
        f"img2dataset, {args.images} URLs: {secs:.1f} s wall "
        f"({args.images / secs:.1f} img/s), {ok} downloaded, peak RSS {peak:.0f} MB",
        file=sys.stderr,
    )
    return secs


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
        result["peak_rss_mb"] = {str(args.small): run_koala(args, env, tmp, args.small)[1]}
        for r in range(args.repeats):  # alternated pairs: Koala, then img2dataset
            koala_s, peak, flow_s = run_koala(args, env, tmp / f"r{r}", args.images)
            i2d_s = run_img2dataset(args, env, tmp / f"r{r}")
            runs.append({"koala_s": koala_s, "flow_s": flow_s, "img2dataset_s": i2d_s})
            result["peak_rss_mb"][str(args.images)] = max(peak, *result["peak_rss_mb"].values())
        result["koala_img_s"] = spread([args.images / r["koala_s"] for r in runs])
        result["koala_flow_seconds"] = spread([r["flow_s"] for r in runs])
        if runs[0]["img2dataset_s"] is None:
            print("img2dataset is not installed (make bench-ingest installs it): no comparison")
            result["img2dataset_img_s"] = result["ratio"] = None
        else:
            result["img2dataset_img_s"] = spread([args.images / r["img2dataset_s"] for r in runs])
            result["ratio"] = spread([r["img2dataset_s"] / r["koala_s"] for r in runs])
    finally:
        server.terminate()
        httpd.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
