"""``make demo``: build a dataset from a small sample collection shipped with scikit-image.

Until ``colorize-archive`` exists, the main job on the embedded default is ``build-dataset``:
this writes a mixed sample collection (colour photos, grayscale and sepia prints, a broken file)
and runs the flow on it with a local Prefect server, then says where everything is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage import data

COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry")
GRAY = ("camera", "coins", "moon", "page")


def write_sample_collection(folder: Path) -> Path:
    """Colour photos, grayscale scans, a sepia print and a truncated file under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COLOUR:
        Image.fromarray(getattr(data, name)()).convert("RGB").save(
            folder / f"{name}.jpg", quality=92
        )
    for name in GRAY:
        Image.fromarray(np.asarray(getattr(data, name)())).save(folder / f"scan_{name}.png")
    camera = Image.fromarray(data.camera())
    ImageOps.colorize(camera, "#2b1d0e", "#f5e6c8", "#8a6a45").save(folder / "sepia_camera.jpg")
    broken = (folder / "astronaut.jpg").read_bytes()
    (folder / "broken_download.jpg").write_bytes(broken[: len(broken) // 3])
    return folder


def main(out_dir: str = "demo-output") -> int:
    """Run ``build-dataset`` on the sample collection and print where the results are."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.build_dataset import build_dataset

    root = Path(out_dir).resolve()
    collection = write_sample_collection(root / "sample-collection")
    dataset = root / "dataset"
    stats = build_dataset(
        sources=[str(collection)],
        out=str(dataset),
        shard_size=4,
        splits="0.5,0.25,0.25",
        max_rejected_fraction=0.7,
    )
    print(
        f"\n{stats['accepted']} of {stats['inputs']} images accepted; rejected: {stats['reasons']}"
    )
    print(f"shards:      {dataset / 'shards'}")
    print(f"index:       {dataset / 'index.parquet'}")
    print(f"run stats:   {dataset / 'stats.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
