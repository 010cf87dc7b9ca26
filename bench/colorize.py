"""Colorize benchmark: images/s of the `colorize-archive` flow end to end on ~1-megapixel
grayscale scans, each stage alone, a naive one-image-at-a-time script, and peak memory.

- end to end: the flow on a local Prefect server and a process Dask LocalCluster (one
  single-threaded worker per core), from the flow call to its return (cluster start and
  model loading included), JPEG output.
- stages alone, in this process, one thread per stage as a worker has: decode (read + L*),
  model forward at the flow's batch size (views, embedding, U-Net, per image), the
  full-resolution merge, and encode + write. ``stages_sum_img_s`` is 1 / (sum of the stages).
- naive: the kind of script the papers ship: per image, scikit-image imread, rgb2lab and
  resize, a batch-of-one forward, scikit-image resize of a*b* back up, lab2rgb, imsave.
- memory: peak RSS of the whole process tree (CLI, its Prefect flow, Dask workers) of
  `koala colorize` on one 50-megapixel 16-bit grayscale TIFF (written as 16-bit TIFF), and on
  collections of N and 4N small scans.

Last line: JSON with end_to_end_img_s, stages_sum_img_s, naive_img_s and peak_rss_mb.

    python bench/colorize.py [--images 240] [--naive-images 8] [--registry ROOT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, run_measured, start_prefect_server

sys.path.insert(0, str(REPO))
from models.config import FLAGSHIP

SIZE = (1155, 866)  # 1.0 megapixel


def scans(folder: Path, n: int, size: tuple[int, int] = SIZE) -> list[Path]:
    """``n`` distinct grayscale JPEG scans of ``size`` from scikit-image's samples."""
    from PIL import Image, ImageOps
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "clock")
    paths = []
    for i in range(n):
        img = Image.fromarray(getattr(data, names[i % len(names)])()).convert("L")
        img = img.resize(size, Image.Resampling.BICUBIC)
        img = ImageOps.mirror(img) if (i // len(names)) % 2 else img
        img = img.rotate((i // (2 * len(names))) * 3, fillcolor=255)  # distinct pixels
        path = folder / f"scan{i:04d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def end_to_end(
    folder: Path, out: Path, registry: str, model: str, workers: int | None = None
) -> float:
    from flows.colorize import colorize_archive
    from infra.runners import dask_runner

    flow = colorize_archive.with_options(task_runner=dask_runner(workers=workers))
    t0 = time.perf_counter()
    result = flow(input=str(folder), output=str(out), registry=registry, model=model)
    seconds = time.perf_counter() - t0
    assert result["counts"] == {"ok": result["inputs"]}, result
    return result["inputs"] / seconds


def stages(paths: list[Path], out: Path, registry: str, name: str, batch: int) -> dict[str, float]:
    """Seconds per image of each stage alone, one thread (as one Dask worker has)."""
    import torch

    from koala.colour import colorize_lightness
    from koala.outputs import encode_output
    from koala.scans import read_scan
    from models.runtime import set_torch_threads
    from tasks.colorize import _predict, cached_colorizer

    set_torch_threads()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    model, backbone, card = cached_colorizer(registry, name, device)
    _predict(model, backbone, [read_scan(paths[0].read_bytes())], device, "auto")  # warm-up
    t = {"decode": 0.0, "forward": 0.0, "merge": 0.0, "encode": 0.0}
    for i in range(0, len(paths), batch):
        t0 = time.perf_counter()
        batch_scans = [read_scan(p.read_bytes()) for p in paths[i : i + batch]]
        t1 = time.perf_counter()
        preds = _predict(model, backbone, batch_scans, device, "auto")
        t2 = time.perf_counter()
        merged = [
            colorize_lightness(s.lightness, p.ab, p.box, light_view=p.light)
            for s, p in zip(batch_scans, preds, strict=True)
        ]
        t3 = time.perf_counter()
        for j, rgb in enumerate(merged):
            data = encode_output(rgb, "jpg", card["name"], card["version"], "0" * 64)
            (out / f"{i + j}.jpg").write_bytes(data)
        t4 = time.perf_counter()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            t[k] += dt
    return {k: v / len(paths) for k, v in t.items()}


def naive(paths: list[Path], out: Path, registry: str, name: str) -> float:
    """One image at a time with scikit-image, as research code does it."""
    import torch
    from skimage import color, io, transform

    from models.backbones import load_backbone
    from models.blocks import AB_SCALE
    from models.config import DEFAULT_BACKBONE
    from models.registry import load_model

    torch.set_num_threads(1)
    model, _ = load_model(registry, name)  # float32, as loaded, one image at a time
    backbone = load_backbone(DEFAULT_BACKBONE).eval()
    t0 = time.perf_counter()
    for i, path in enumerate(paths):
        gray = io.imread(path)
        rgb = color.gray2rgb(gray)
        lab = color.rgb2lab(rgb)
        light = lab[..., 0]
        small = transform.resize(light, (200, 200))  # the papers squash, no padding
        embed_in = transform.resize(light, (299, 299))
        with torch.inference_mode():
            emb, _ = backbone(torch.from_numpy(embed_in / 100.0).float()[None, None])
            ab = model(torch.from_numpy(small / 100.0).float()[None, None], emb)[0].numpy()
        ab = transform.resize(ab.transpose(1, 2, 0) * AB_SCALE, light.shape)
        out_rgb = color.lab2rgb(np.dstack([light, ab]))
        io.imsave(out / f"{i}.jpg", (out_rgb * 255).astype(np.uint8), check_contrast=False)
    return len(paths) / (time.perf_counter() - t0)


def big_tiff(path: Path, megapixels: float = 50.0) -> None:
    """A 16-bit grayscale TIFF of ``megapixels`` (a tiled-up scikit-image photograph)."""
    import tifffile
    from PIL import Image
    from skimage import data

    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(megapixels * 1e6 / w)
    base = Image.fromarray(data.camera()).resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(base).astype(np.uint16) * 257
    arr += (np.arange(w, dtype=np.uint16) % 251)[None, :]  # fine 16-bit detail
    tifffile.imwrite(path, arr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--naive-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--registry", default=str(Path(tempfile.gettempdir()) / "no-registry"))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--model", default=FLAGSHIP, help="NAME[@VERSION] (default: flagship)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    work = Path(tempfile.mkdtemp(prefix="koala-bench-colorize-"))
    server, api = start_prefect_server(work / "prefect")
    os.environ["PREFECT_API_URL"] = api
    env = os.environ | {"PYTHONPATH": str(REPO)}
    try:
        paths = scans(work / "scans", args.images)
        e2e = end_to_end(work / "scans", work / "out-flow", args.registry, args.model)
        e2e_one = end_to_end(
            work / "scans", work / "out-flow-1", args.registry, args.model, workers=1
        )
        print(
            f"end to end through the flow: {e2e:.2f} img/s on {os.cpu_count()} workers, "
            f"{e2e_one:.2f} img/s on one ({args.images} images)",
            flush=True,
        )
        (work / "out-stages").mkdir()
        per = stages(paths[:16], work / "out-stages", args.registry, args.model, args.batch_size)
        total = sum(per.values())
        print("stages alone, ms/image: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in per.items()))
        (work / "out-naive").mkdir()
        slow = naive(paths[: args.naive_images], work / "out-naive", args.registry, args.model)
        print(f"naive script: {slow:.2f} img/s", flush=True)
        memory = {}
        if not args.skip_memory:
            cli = [sys.executable, "-m", "cli.main", "colorize", "--registry", args.registry]
            cli += ["--model", args.model]
            big = work / "big"
            big.mkdir()
            big_tiff(big / "scan-50mp.tif")
            memory["50mp_16bit_tiff"] = _peak(
                [*cli, "--input", str(big), "--output", str(work / "out-big"), "--format", "tiff"],
                env,
            )
            for n in (args.images // 4, args.images):
                folder = _subset(paths, n, work)
                out = str(work / f"out-mem-{n}")
                memory[f"{n}_images"] = _peak([*cli, "--input", str(folder), "--output", out], env)
            print(f"peak RSS (MB): {memory}", flush=True)
        result = {
            "images": args.images,
            "megapixels_per_image": round(SIZE[0] * SIZE[1] / 1e6, 2),
            "cores": os.cpu_count(),
            "model": args.model,
            "end_to_end_img_s": round(e2e, 2),
            "end_to_end_one_worker_img_s": round(e2e_one, 2),
            "stage_ms": {k: round(v * 1e3, 1) for k, v in per.items()},
            "stages_sum_img_s": round(1.0 / total, 2),
            "naive_img_s": round(slow, 2),
            "end_to_end_over_stages": round(e2e * total, 2),
            "one_worker_over_stages": round(e2e_one * total, 2),
            "end_to_end_over_naive": round(e2e / slow, 2),
            "peak_rss_mb": memory,
        }
        print(json.dumps(result))
    finally:
        server.terminate()


def _peak(cmd: list[str], env: dict[str, str]) -> float:
    return round(run_measured(cmd, env)[1], 1)


def _subset(paths: list[Path], n: int, work: Path) -> Path:
    folder = work / f"subset-{n}"
    folder.mkdir(exist_ok=True)
    for p in paths[:n]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


if __name__ == "__main__":
    main()
