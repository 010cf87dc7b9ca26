"""Preprocess one dataset shard into a feature shard: the two padded views, Lab, the embedding.

For every sample of ``shards/{split}-{n}.tar`` this writes to ``features/{backbone}/`` the
200x200 view as compact Lab, the pad boxes, and the global embedding of the gray 299x299 view;
then a per-shard Parquet of statistics, which marks the shard done (with its cache key).
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import numpy as np
import pandas as pd
import torch
import webdataset as wds
from PIL import Image

from koala import storage
from koala.colour import colourfulness, model_views
from koala.images import pil_guards
from models.backbones import EmbeddingBackbone, cached_backbone
from models.runtime import resolve_device, set_torch_threads
from tasks.config import PreprocessConfig

#: bump when the feature shard layout changes, so old features are recomputed
FEATURES_FORMAT = 1
FEATURE_COLUMNS = [
    "key",
    "split",
    "shard",
    "width",
    "height",
    "box200_x0",
    "box200_y0",
    "box200_x1",
    "box200_y1",
    "box299_x0",
    "box299_y0",
    "box299_x1",
    "box299_y1",
    "l_mean",
    "l_std",
    "a_mean",
    "a_std",
    "b_mean",
    "b_std",
    "colourfulness",
    "embedding_norm",
    "embedding_dim",
    "backbone",
    "weights_sha256",
    "encoder_size",
    "embed_size",
    "cache_key",
]


def features_dir(root: str, backbone: str) -> str:
    return storage.join(root, "features", backbone)


def cache_key(cfg: PreprocessConfig, weights_sha256: str, source_stats: str) -> str:
    """Backbone, weights, sizes, format and the source shard: any change recomputes."""
    spec = {
        "backbone": cfg.backbone,
        "weights": weights_sha256,
        "encoder": cfg.encoder_size,
        "embed": cfg.embed_size,
        "format": FEATURES_FORMAT,
        "source": source_stats,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def image_views(jpg: bytes, cfg: PreprocessConfig) -> dict:
    """Everything about one image but its embedding: views, Lab, boxes and statistics."""
    pil_guards()  # stored images may exceed Pillow's own pixel limit (--max-pixels)
    img = Image.open(io.BytesIO(jpg)).convert("RGB")
    views = model_views(img, cfg.encoder_size, cfg.embed_size)
    lab, enc_rgb = views.pop("lab"), views.pop("rgb")
    x0, y0, x1, y1 = views["box200"]
    real = lab[y0:y1, x0:x1]
    return {
        "width": img.width,
        "height": img.height,
        **views,
        "l_mean": float(real[..., 0].mean()),
        "l_std": float(real[..., 0].std()),
        "a_mean": float(real[..., 1].mean()),
        "a_std": float(real[..., 1].std()),
        "b_mean": float(real[..., 2].mean()),
        "b_std": float(real[..., 2].std()),
        "colourfulness": colourfulness(enc_rgb[y0:y1, x0:x1]),
    }


def embed(model: EmbeddingBackbone, grays: list[np.ndarray], device: torch.device):
    """Embeddings and logits (float16 numpy) of a batch of gray views in [0, 1]."""
    batch = torch.from_numpy(np.stack(grays)[:, None]).to(device)
    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
        emb, logits = model(batch)
    return emb.float().cpu().numpy().astype(np.float16), logits.float().cpu().numpy().astype(
        np.float16
    )


def shard_outputs(out_dir: str, shard: str) -> tuple[str, str]:
    base = storage.join(out_dir, shard)
    return f"{base}.tar", f"{base}.parquet"


def preprocess_shard(shard_url: str, root: str, cfg: PreprocessConfig = PreprocessConfig()) -> dict:
    """Write the feature shard of ``shard_url`` (skipped when done with the same cache key)."""
    t0 = time.perf_counter()
    storage.register_webdataset_schemes()
    threads = set_torch_threads()
    device = resolve_device(cfg.device)
    model = cached_backbone(cfg.backbone, cfg.weights, device)
    shard = shard_url.rsplit("/", 1)[-1].removesuffix(".tar")
    stats_url = shard_url.removesuffix(".tar") + ".stats.json"
    source = storage.read_bytes(stats_url).decode() if storage.exists(stats_url) else shard
    key = cache_key(cfg, model.weights_sha256, hashlib.sha256(source.encode()).hexdigest())
    out_dir = features_dir(root, cfg.backbone)
    tar_url, parquet_url = shard_outputs(out_dir, shard)
    if storage.exists(parquet_url):
        done = storage.read_parquet(parquet_url, columns=["cache_key"])
        if len(done) == 0 or (done["cache_key"] == key).all():
            return {"shard": shard, "samples": len(done), "skipped": True, "seconds": 0.0}

    batch = cfg.batch_for(device)
    rows: list[dict] = []
    pending: list[tuple[str, dict]] = []
    split = shard.split("-")[0]
    with storage.atomic_open(tar_url) as f:
        writer = wds.TarWriter(f, mtime=0.0, encoder=False)

        def flush() -> None:
            emb, logits = embed(model, [v.pop("gray299") for _, v in pending], device)
            for (k, v), e, lg in zip(pending, emb, logits, strict=True):
                meta = {
                    "key": k,
                    "width": v["width"],
                    "height": v["height"],
                    "box200": list(v["box200"]),
                    "box299": list(v["box299"]),
                    "backbone": cfg.backbone,
                    "weights_sha256": model.weights_sha256,
                }
                writer.write(
                    {
                        "__key__": k,
                        "l.npy": npy(v["l"]),
                        "ab.npy": npy(v["ab"]),
                        "emb.npy": npy(e),
                        "logits.npy": npy(lg),
                        "json": json.dumps(meta).encode(),
                    }
                )
                rows.append(_row(k, split, shard, v, e, model, cfg, key))
            pending.clear()

        for sample in wds.WebDataset(shard_url, shardshuffle=False):
            pending.append((sample["__key__"], image_views(sample["jpg"], cfg)))
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        writer.close()
    frame = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
    storage.write_parquet(parquet_url, frame)
    return {
        "shard": shard,
        "samples": len(frame),
        "skipped": False,
        "threads": threads,
        "device": str(device),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _row(
    k: str,
    split: str,
    shard: str,
    v: dict,
    e: np.ndarray,
    model: EmbeddingBackbone,
    cfg: PreprocessConfig,
    key: str,
) -> dict:
    b2, b9 = v["box200"], v["box299"]
    return {
        "key": k,
        "split": split,
        "shard": shard,
        "width": v["width"],
        "height": v["height"],
        "box200_x0": b2[0],
        "box200_y0": b2[1],
        "box200_x1": b2[2],
        "box200_y1": b2[3],
        "box299_x0": b9[0],
        "box299_y0": b9[1],
        "box299_x1": b9[2],
        "box299_y1": b9[3],
        **{
            s: v[s]
            for s in ("l_mean", "l_std", "a_mean", "a_std", "b_mean", "b_std", "colourfulness")
        },
        "embedding_norm": float(np.linalg.norm(e.astype(np.float32))),
        "embedding_dim": int(e.shape[0]),
        "backbone": cfg.backbone,
        "weights_sha256": model.weights_sha256,
        "encoder_size": cfg.encoder_size,
        "embed_size": cfg.embed_size,
        "cache_key": key,
    }


def write_features_index(root: str, backbone: str, shards: list[str]) -> pd.DataFrame:
    """Combine the per-shard Parquets of ``shards`` into ``features/{backbone}/index.parquet``."""
    out = features_dir(root, backbone)
    parts = [storage.read_parquet(shard_outputs(out, s)[1]) for s in shards]
    index = pd.concat(parts, ignore_index=True).sort_values("key", ignore_index=True)
    storage.write_parquet(storage.join(out, "index.parquet"), index)
    return index
