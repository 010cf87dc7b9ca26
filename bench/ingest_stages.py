"""Ingest floor: one thread's CPU per image for each check `build-dataset` does, on the
benchmark's images, and the throughput those checks alone would allow on every core.

It times, image by image, the content hash, the full decode (koala/images.py decode_image),
the monochrome cascade's steps (koala/monochrome.py: the Lab thumbnail, the picture apart from
its surround, the tint, the clear-case measures, and the colour judges' CNNs on the pictures
that reach them), the whole judge as ingest calls it (``colour_evidence``; the share each step
settles), and the pixel hash: the per-image work of tasks/ingest.py process_input, without
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, make_images, summary

STAGES = ("sha256", "decode", "thumbnail", "surround", "tint", "clear_cases", "judge_cnn", "pixel")


def one_pass(datas: list[bytes]) -> tuple[dict[str, float], dict[str, int], list[float]]:
    """Milliseconds per image of each stage over ``datas`` in order (one thread), how many
    images each step of the cascade settled, and each image's whole-judge milliseconds."""
    from koala import monochrome as mono
    from koala.images import DEFAULT_LIMITS, colour_evidence, decode_image, pixel_sha256
    from koala.judge_runtime import monochrome_probability, second_opinion
    from koala.surround import picture_mask

    spent = dict.fromkeys(STAGES, 0.0)
    settled: dict[str, int] = {}
    judge_ms = []
    for data in datas:
        marks = [time.perf_counter()]
        hashlib.sha256(data).hexdigest()
        marks.append(time.perf_counter())
        rgb = decode_image(data).rgb
        marks.append(time.perf_counter())
        lab = mono.thumbnail_lab(rgb)
        marks.append(time.perf_counter())
        picture = picture_mask(lab)
        marks.append(time.perf_counter())
        m = mono.Measures(lab, picture, mono.tint_residual(lab, picture))
        marks.append(time.perf_counter())
        mono.one_tint_spread(m), mono.off_tint_share(m), mono.hue_families(m)
        marks.append(time.perf_counter())
        t0 = time.perf_counter()
        ev = colour_evidence(rgb, DEFAULT_LIMITS)  # the whole judge, as ingest calls it
        judge_ms.append((time.perf_counter() - t0) * 1000)
        settled[ev.stage] = settled.get(ev.stage, 0) + 1
        t0 = time.perf_counter()
        if ev.stage in ("judge", "second opinion"):  # the CNNs: only ambiguous pictures
            view = mono.judge_view(m)
            monochrome_probability(view[None])
            if ev.stage == "second opinion":  # near the cut: both judges, 8 views
                second_opinion(view)
        marks.append(marks[-1] + time.perf_counter() - t0)
        t0 = time.perf_counter()
        pixel_sha256(rgb)
        marks.append(marks[-1] + time.perf_counter() - t0)
        for stage, a, b in zip(STAGES, marks, marks[1:], strict=False):
            spent[stage] += b - a
    return {k: v / len(datas) * 1000 for k, v in spent.items()}, settled, judge_ms


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
    runs = [one_pass(datas) for _ in range(args.repeats)]
    passes = [r[0] for r in runs]
    cores = os.cpu_count() or 1
    result: dict = {"images": len(datas), "repeats": args.repeats, "cores": cores}
    result["settled_by"] = {k: round(v / len(datas), 4) for k, v in runs[0][1].items()}
    result["judge_ms"] = summary([statistics.median(r[2]) for r in runs], 2)
    result["judge_ms_mean"] = summary([statistics.mean(r[2]) for r in runs], 2)
    result["judge_ms_p95"] = round(float(np.percentile(runs[0][2], 95)), 2)
    print(f"{'whole judge':>14}: {result['judge_ms']['median']:6.2f} ms per image (median image)")
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
