"""Ingest floor: one thread's CPU per image for each check `build-dataset` does, on the
benchmark's images, and the throughput those checks alone would allow on every core.

It times, image by image, the content hash, the full decode (koala/images.py decode_image),
the single-tint measures (_off_tint, _fraction, _spread), the colour judge's view (judge_view)
and its CNN, and the pixel hash: the per-image work of tasks/ingest.py process_input, without
fetching, staging, shards, index or Prefect. Compare `ceiling_img_s` with img2dataset's rate
from bench/ingest.py: Koala cannot beat img2dataset while this ceiling is below it.
Run ``--repeats`` times; the last line is JSON with the median, min and max of each figure.

    python bench/ingest_stages.py [--images 300] [--repeats 3] [--source DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, summary
from ingest import make_images

STAGES = ("sha256", "decode", "single_tint", "tint_decision", "judge_view", "judge_cnn", "pixel")


def one_pass(datas: list[bytes]) -> dict[str, float]:
    """Milliseconds per image of each stage, over ``datas`` in order, one thread."""
    import torch

    from koala.colour_judge import monochrome_probability
    from koala.images import (
        DEFAULT_LIMITS,
        _fraction,
        _off_tint,
        _spread,
        decode_image,
        judge_view,
        pixel_sha256,
    )

    spent = dict.fromkeys(STAGES, 0.0)
    for data in datas:
        marks = [time.perf_counter()]
        hashlib.sha256(data).hexdigest()
        marks.append(time.perf_counter())
        rgb = decode_image(data).rgb
        marks.append(time.perf_counter())
        light, distance = _off_tint(rgb)
        marks.append(time.perf_counter())
        _fraction(light, distance, DEFAULT_LIMITS)
        _spread(distance)
        marks.append(time.perf_counter())
        view = torch.from_numpy(judge_view(rgb))[None]
        marks.append(time.perf_counter())
        monochrome_probability(view)
        marks.append(time.perf_counter())
        pixel_sha256(rgb)
        marks.append(time.perf_counter())
        for stage, a, b in zip(STAGES, marks, marks[1:], strict=False):
            spent[stage] += b - a
    return {k: v / len(datas) * 1000 for k, v in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared/datasets/bsds500")
    ap.add_argument("--work", type=Path, default=REPO / "bench-output" / "ingest")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    paths = make_images(args.source, args.images, args.work / "images")[: args.images]
    datas = [p.read_bytes() for p in paths]
    one_pass(datas[:4])  # warm-up: judge weights, imports
    passes = [one_pass(datas) for _ in range(args.repeats)]
    cores = os.cpu_count() or 1
    result: dict = {"images": len(datas), "repeats": args.repeats, "cores": cores}
    totals = [sum(p.values()) for p in passes]
    for stage in (*STAGES, "total"):
        values = totals if stage == "total" else [p[stage] for p in passes]
        result[f"{stage}_ms"] = summary(values, 2)
        print(f"{stage:>14}: {statistics.median(values):6.2f} ms per image (median)")
    result["ceiling_img_s"] = round(cores * 1000 / statistics.median(totals), 1)
    print(f"these checks alone, on {cores} cores with no overhead: {result['ceiling_img_s']} img/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
