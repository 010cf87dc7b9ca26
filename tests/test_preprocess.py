"""The preprocess flow on a real Dask LocalCluster (processes, two workers), end to end."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from flows.build_dataset import build_dataset
from flows.preprocess import preprocess
from infra.runners import dask_runner
from koala.colour import decode_lab, lab_to_rgb, resize_and_pad
from tasks.preprocess import PreprocessConfig, cache_key
from tasks.quality import DataQualityError, validate_features_index
from tests.conftest import free_port
from tests.fixtures import colour_photo, encode

ROOT = Path(__file__).resolve().parent.parent
SIZES = [(160, 120), (90, 200), (150, 150), (300, 100), (128, 96), (100, 130), (210, 140)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Path:
    root = tmp_path_factory.mktemp("pp")
    src = root / "photos"
    src.mkdir()
    for i, size in enumerate(SIZES):
        (src / f"p{i}.jpg").write_bytes(encode(colour_photo(200 + i, size), quality=92))
    build_dataset(sources=[str(src)], out=str(root / "data"), shard_size=3, splits="0.7,0.3,0")
    return root / "data"


def read_features(shard: Path) -> dict[str, dict]:
    return {s["__key__"]: s for s in wds.WebDataset(str(shard), shardshuffle=False).decode()}


def run_local(data: Path, workers: int = 2) -> dict:
    flow = preprocess.with_options(task_runner=dask_runner(workers=workers))
    return flow(data=str(data))


def test_features_for_every_accepted_image_turn_back_into_the_image(dataset: Path) -> None:
    result = run_local(dataset)
    accepted = pd.read_parquet(dataset / "index.parquet")
    accepted = accepted[accepted["status"] == "accepted"].set_index("key")
    out = dataset / "features" / "efficientnet-lite0"
    index = pd.read_parquet(out / "index.parquet")
    assert result["samples"] == len(index) == len(accepted) == len(SIZES)
    assert set(index["key"]) == set(accepted.index)
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(
        p.name for p in (dataset / "shards").glob("*.tar")
    )
    for shard in out.glob("*.tar"):
        for key, s in read_features(shard).items():
            light, ab = s["l.npy"], s["ab.npy"]
            assert light.dtype == np.uint8 and light.shape == (200, 200)
            assert ab.dtype == np.int8 and ab.shape == (2, 200, 200)
            assert s["emb.npy"].dtype == np.float16 and s["emb.npy"].shape == (1280,)
            assert s["logits.npy"].shape == (1000,)
            assert np.isfinite(s["emb.npy"].astype(np.float32)).all()
            with open(accepted.loc[key, "uri"], "rb") as f:
                source = Image.open(io.BytesIO(f.read())).convert("RGB")
            view, box = resize_and_pad(source, 200)
            assert s["json"]["box200"] == list(box)
            back = lab_to_rgb(decode_lab(light, ab)).astype(int)
            assert np.abs(back - view.astype(int)).mean() < 2.0  # within JPEG tolerance
            row = index.set_index("key").loc[key]
            assert (row["box200_x0"], row["box200_y1"]) == (box[0], box[3])
    assert index["backbone"].eq("efficientnet-lite0").all()
    assert index["weights_sha256"].str.len().eq(64).all()
    assert (index["embedding_norm"] > 0).all() and index["embedding_dim"].eq(1280).all()


def test_resume_recomputes_only_what_is_missing_or_stale(dataset: Path) -> None:
    out = dataset / "features" / "efficientnet-lite0"
    run_local(dataset)  # make sure everything is there
    tars = sorted(out.glob("*.tar"))
    before = {p.name: p.read_bytes() for p in tars}
    mtimes = {p.name: p.stat().st_mtime_ns for p in tars}
    (out / tars[0].name).unlink()
    (out / tars[0].name.replace(".tar", ".parquet")).unlink()
    stale = out / tars[1].name.replace(".tar", ".parquet")
    frame = pd.read_parquet(stale)
    frame["cache_key"] = "0" * 16  # as if made by other weights or sizes
    frame.to_parquet(stale)
    result = run_local(dataset, workers=1)
    assert result["recomputed"] == 2
    after = {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}
    assert after == before  # same features again, byte for byte
    for p in tars[2:]:
        assert p.stat().st_mtime_ns == mtimes[p.name]  # untouched


def test_cache_key_covers_backbone_weights_sizes_and_source() -> None:
    base = cache_key(PreprocessConfig(), "w" * 64, "src")
    assert base == cache_key(PreprocessConfig(batch_size=7), "w" * 64, "src")
    assert base != cache_key(PreprocessConfig(backbone="inception-resnet-v2"), "w" * 64, "src")
    assert base != cache_key(PreprocessConfig(), "v" * 64, "src")
    assert base != cache_key(PreprocessConfig(encoder_size=256), "w" * 64, "src")
    assert base != cache_key(PreprocessConfig(embed_size=224), "w" * 64, "src")
    assert base != cache_key(PreprocessConfig(), "w" * 64, "other source shard")


def test_features_suite_fails_clearly(dataset: Path) -> None:
    index = pd.read_parquet(dataset / "features" / "efficientnet-lite0" / "index.parquet")
    with pytest.raises(DataQualityError, match="expect_table_row_count_to_equal"):
        validate_features_index(index, expected_rows=99, embedding_dim=1280, encoder_size=200)
    broken = index.assign(l_mean=np.nan)
    with pytest.raises(DataQualityError, match="l_mean"):
        validate_features_index(
            broken, expected_rows=len(index), embedding_dim=1280, encoder_size=200
        )


def test_hand_started_scheduler_gives_identical_features(
    dataset: Path, tmp_path: Path, prefect_server: str
) -> None:
    """`dask scheduler` + two `dask worker` processes started by hand, as a user would."""
    reference = {
        p.name: read_features(p)
        for p in (dataset / "features" / "efficientnet-lite0").glob("*.tar")
    }
    if not reference:
        run_local(dataset)
        reference = {
            p.name: read_features(p)
            for p in (dataset / "features" / "efficientnet-lite0").glob("*.tar")
        }
    copy = tmp_path / "data"
    import shutil

    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns("features"))
    port = free_port()
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PREFECT_API_URL=prefect_server, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [
                bindir / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    address = f"tcp://127.0.0.1:{port}"
    try:
        time.sleep(3)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [bindir / "dask", "worker", address, "--nthreads", "1", "--no-dashboard"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "preprocess",
                "--data",
                str(copy),
                "--scheduler",
                address,
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stderr[-2000:]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    got = {
        p.name: read_features(p) for p in (copy / "features" / "efficientnet-lite0").glob("*.tar")
    }
    assert set(got) == set(reference)
    for name, samples in reference.items():
        assert set(got[name]) == set(samples)
        for key, s in samples.items():
            for member in ("l.npy", "ab.npy", "emb.npy", "logits.npy"):
                np.testing.assert_array_equal(got[name][key][member], s[member])


def test_cli_errors_before_any_work(tmp_path: Path, dataset: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    r = CliRunner().invoke(app, ["preprocess", "--data", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(app, ["preprocess", "--data", str(dataset), "--backbone", "vgg"])
    assert r.exit_code == 2 and "'vgg' is not one of 'efficientnet-lite0'" in r.output
    r = CliRunner().invoke(
        app, ["preprocess", "--data", str(dataset), "--backbone", "inception-resnet-v2"]
    )
    assert r.exit_code == 2 and "needs --weights" in r.output
    assert not (dataset / "features" / "inception-resnet-v2").exists()
