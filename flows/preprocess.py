"""``preprocess``: dataset shards into feature shards on Dask (views, Lab, embeddings)."""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from flows.artifacts import publish_features
from flows.progress import track
from flows.stages import stage
from infra.runners import DeferredRunner, dask_runner
from koala import storage
from koala.errors import KoalaError
from koala.params import pick
from models.backbones import BACKBONE_INFO, BACKBONES
from tasks.config import PreprocessConfig
from tasks.preprocess import features_dir, preprocess_shard, write_features_index
from tasks.quality import validate_features_index

preprocess_task = stage(preprocess_shard, "preprocess-shard", retries=1)
validate_task = stage(validate_features_index, "validate-features-index")


def dataset_shards(data: str) -> list[str]:
    """The shard tars of a dataset root, or a one-line error when there are none."""
    if not storage.exists(data):
        raise KoalaError(f"dataset {data!r} does not exist (build it with koala build-dataset)")
    shards = storage.list_files(storage.join(data, "shards"), "*.tar")
    if not shards:
        raise KoalaError(f"dataset {data!r} has no shards under {storage.join(data, 'shards')}")
    return shards


@flow(name="preprocess", task_runner=DeferredRunner(dask_runner), log_prints=True)
def preprocess(
    data: str,
    backbone: str = PreprocessConfig.backbone,
    weights: str | None = PreprocessConfig.weights,
    batch_size: int | None = PreprocessConfig.batch_size,
) -> dict:
    """Write ``features/{backbone}/{shard}.tar`` for every shard of ``data``, one Dask task per
    shard, then ``features/{backbone}/index.parquet``, validated by the features suite."""
    cfg = pick(PreprocessConfig, locals())
    log = get_run_logger()
    if backbone not in BACKBONES:
        raise KoalaError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    shards = dataset_shards(data)
    log.info("%d shard(s) of %s with backbone %s", len(shards), data, backbone)
    futures = [preprocess_task.submit(s, data, cfg) for s in shards]
    results = list(
        track(
            futures,
            "preprocess",
            unit="shard",
            describe=lambda r: (
                f"{r['shard']}: {r['samples']} samples"
                + (
                    " (already done)"
                    if r["skipped"]
                    else f" in {r['seconds']} s on {r['device']} x{r['threads']}"
                )
            ),
        )
    )
    out = features_dir(data, backbone)
    index = write_features_index(data, backbone, [r["shard"] for r in results])
    accepted = storage.read_parquet(storage.join(data, "index.parquet"), columns=["status"])
    quality = validate_task(
        index,
        expected_rows=int((accepted["status"] == "accepted").sum()),
        embedding_dim=BACKBONE_INFO[backbone].embedding_dim,
        encoder_size=cfg.encoder_size,
    )
    log.info("features: %d samples in %d shard(s) under %s", len(index), len(results), out)
    result = {
        "samples": len(index),
        "shards": len(results),
        "features": out,
        "quality": quality,
        "recomputed": sum(not r["skipped"] for r in results),
        "task_seconds": round(sum(r["seconds"] for r in results), 3),
    }
    publish_features(result, data)
    return result
