"""Grayscale inputs for looking at a model's colours: N photographs of a dataset's split (spread
over its sources, every k-th image of each), written as 8-bit gray JPEGs (the photograph's own
L*: the gray whose lightness it is) beside their colour originals, ready for
``koala colorize --input OUT/gray``; the contact sheet then shows the model's colours and
``OUT/truth`` the real ones.

    python bench/gray_inputs.py --data DATA --split test --count 24 --out /tmp/look/mix
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pick(data: str, split: str, count: int) -> list[tuple[str, bytes]]:
    """``count`` (key, JPEG) of ``split``, round-robin over the index's sources."""
    from koala import storage
    from tasks.evaluate import split_samples

    index = storage.read_parquet(storage.join(data, "index.parquet"), columns=["key", "source"])
    source_of = dict(zip(index["key"], index["source"], strict=True))
    by_source: dict[str, list[tuple[str, bytes]]] = {}
    for key, jpg, _ in split_samples(data, "efficientnet-lite0", split):
        by_source.setdefault(source_of.get(key, "?"), []).append((key, jpg))
    chosen, queues = [], [q[:: max(1, len(q) // count)] for q in by_source.values()]
    while len(chosen) < count and any(queues):
        for q in queues:
            if q and len(chosen) < count:
                chosen.append(q.pop(0))
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import numpy as np
    from PIL import Image

    from koala.colour import lab_to_rgb, rgb_to_lab

    out = Path(args.out)
    (out / "gray").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    chosen = pick(args.data, args.split, args.count)
    for key, jpg in chosen:
        rgb = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
        lab = rgb_to_lab(rgb)
        lab[..., 1:] = 0.0  # the print's gray: the photograph's own L*, no colour
        gray = Image.fromarray(lab_to_rgb(lab)[..., 0], "L")
        gray.save(out / "gray" / f"{key}.jpg", quality=95)
        (out / "truth" / f"{key}.jpg").write_bytes(jpg)
    print(json.dumps({"split": args.split, "images": len(chosen), "out": str(out)}))


if __name__ == "__main__":
    main()
