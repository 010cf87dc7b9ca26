"""Preprocess benchmark: images/s of the `preprocess` flow on 1 and 2 single-threaded Dask
workers, against the embedding forward alone (same images, same batch size, one thread).

The dataset is built once with `build-dataset` (100-image shards, so that the work spreads
over workers) from ../shared/datasets/bsds500 and mirror images of it (600 distinct images),
or from scikit-image samples when that is absent.
Each worker count gets its own LocalCluster; a warm-up flow run on a separate small dataset
loads the backbone in every worker first, so the timed run measures steady-state throughput
(orchestration included; cluster start and model load excluded, and printed separately).
The 1- and 2-worker runs alternate ``--repeats`` times, so that a drift in the machine's speed
(a shared VM's is large) hits both; the speed-up is taken per pair.
Last line: JSON with the median, min and max of one_worker_img_s, two_workers_img_s and
speedup_2_vs_1, and embedding_only_img_s.

    python bench/preprocess.py [--source DIR] [--images N] [--shard-size 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, start_prefect_server, summary


def build(source: Path, n: int, out: Path, shard_size: int) -> None:
    from flows.build_dataset import build_dataset

    src = out.parent / f"{out.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    files = sorted(source.rglob("*.jpg")) if source.exists() else []
    if files:
        from PIL import Image, ImageOps

        for i in range(min(n, 2 * len(files))):  # the photos, then their mirror images
            p = files[i % len(files)]
            if i < len(files):
                shutil.copy(p, src / p.name)
            else:
                ImageOps.mirror(Image.open(p)).save(src / f"mirror-{p.name}", quality=95)
    else:
        from PIL import Image
        from skimage import data

        for name in ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field"):
            Image.fromarray(getattr(data, name)()).convert("RGB").save(src / f"{name}.jpg")
    build_dataset(
        sources=[str(src)],
        out=str(out),
        shard_size=shard_size,
        splits="1,0,0",
        max_rejected_fraction=0.9,
    )


LAST_TASK_SECONDS = 0.0


def run_flow(
    data: Path, workers: int, warm: Path, embed: bool = False
) -> tuple[float, float, int, tuple | None]:
    """(seconds of the timed run, seconds of cluster start + warm-up, samples, and with
    ``embed`` on one worker, the embedding-only timing taken in that same worker process)."""
    import dask
    from distributed import LocalCluster

    from flows.preprocess import preprocess
    from infra.runners import WORKER_MALLOC_ENV, dask_runner

    dask.config.set(
        {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    )
    t0 = time.perf_counter()
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        flow = preprocess.with_options(task_runner=dask_runner(cluster.scheduler_address))
        shutil.rmtree(warm / "features", ignore_errors=True)
        flow(data=str(warm))  # loads the backbone in every worker
        setup = time.perf_counter() - t0
        shutil.rmtree(data / "features", ignore_errors=True)
        t1 = time.perf_counter()
        result = flow(data=str(data))
        secs = time.perf_counter() - t1
        alone = None
        if embed and workers == 1:
            from distributed import Client

            with Client(cluster) as client:
                alone = client.submit(embedding_only, data, pure=False).result()
        print(
            f"  flow: {secs:.1f} s; its preprocess tasks: {result['task_seconds']:.1f} s "
            f"of worker time = {result['task_seconds'] / result['samples'] * 1000:.1f} ms/image"
        )
        global LAST_TASK_SECONDS
        LAST_TASK_SECONDS = result["task_seconds"]
        return secs, setup, result["samples"], alone


def embedding_only(data: Path) -> tuple[float, int]:
    """Seconds of the backbone forward alone over the dataset's gray 299 views (views made
    beforehand, untimed), in the calling process with one thread, as the flow batches them."""
    import torch
    import webdataset as wds
    from PIL import Image

    from koala.colour import padded_view_lab, resize_and_pad
    from models.backbones import load_backbone
    from tasks.preprocess import PreprocessConfig, embed

    torch.set_num_threads(1)
    cfg = PreprocessConfig()
    device = torch.device("cpu")
    grays = []
    for shard in sorted((data / "shards").glob("*.tar")):
        for s in wds.WebDataset(str(shard), shardshuffle=False):
            rgb, box = resize_and_pad(Image.open(io.BytesIO(s["jpg"])), cfg.embed_size)
            grays.append(padded_view_lab(rgb, box)[..., 0] / np.float32(100.0))
    model = load_backbone(cfg.backbone)
    batch = cfg.batch_for(device)
    embed(model, grays[:batch], device)  # warm-up
    t = time.perf_counter()
    for i in range(0, len(grays), batch):
        embed(model, grays[i : i + batch], device)
    return time.perf_counter() - t, len(grays)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared/datasets/bsds500")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="alternated 1- and 2-worker runs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="koala-bench-pp-"))
    server, api = start_prefect_server(tmp / "prefect")
    os.environ.update(
        PREFECT_API_URL=api,
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    try:
        data, warm = tmp / "data", tmp / "warm"
        build(args.source, args.images, data, args.shard_size)
        build(args.source, 8, warm, 4)
        runs: dict[int, list[float]] = {1: [], 2: []}
        task_ms: list[float] = []
        alone = None
        for rep in range(args.repeats):  # alternated, so a drift of the machine hits both
            for workers in (1, 2):
                secs, setup, n, timing = run_flow(data, workers, warm, embed=rep == 0)
                print(
                    f"run {rep + 1}, {workers} worker(s): {n} images in {secs:.1f} s = "
                    f"{n / secs:.2f} img/s (cluster start + model load + warm-up: {setup:.1f} s)"
                )
                runs[workers].append(n / secs)
                if workers == 1:
                    task_ms.append(LAST_TASK_SECONDS / n * 1000)
                alone = timing or alone
        secs, n = alone
        print(
            f"embedding forward alone (same 1-thread worker): {n} images in {secs:.1f} s "
            f"= {n / secs:.2f} img/s"
        )
        ratios = [b / a for a, b in zip(runs[1], runs[2], strict=True)]
        embed_ms = secs / n * 1000
        result = {
            "images": n,
            "repeats": args.repeats,
            "one_worker_img_s": summary(runs[1]),
            "two_workers_img_s": summary(runs[2]),
            "speedup_2_vs_1": summary(ratios),
            "embedding_only_img_s": round(n / secs, 3),
            "per_image_ms": summary(task_ms),
            "embedding_ms": round(embed_ms, 2),
        }
    finally:
        server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
