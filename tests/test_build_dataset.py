"""The build-dataset flow end to end on real servers: Prefect, loopback HTTP, moto S3, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from flows.build_dataset import build_dataset
from koala import storage
from koala.sources import OUTPUT_MARKER, enumerate_inputs
from tasks.quality import DataQualityError
from tests.conftest import FixtureServer
from tests.fixtures import (
    colour_photo,
    corrupt_jpeg,
    encode,
    gray,
    rgb_array,
    sepia,
    truncated_jpeg,
)

ROOT = Path(__file__).resolve().parent.parent


def make_mixed_folder(folder: Path, n_good: int = 6) -> dict[str, str | None]:
    """Good colour photos plus every kind of bad input; returns file name -> expected reason."""
    folder.mkdir(parents=True)
    expected: dict[str, str | None] = {}
    for i in range(n_good):
        ext, fmt = (".png", "PNG") if i % 3 == 2 else (".jpg", "JPEG")
        (folder / f"good{i}{ext}").write_bytes(encode(colour_photo(i, (160 + i, 120)), fmt))
        expected[f"good{i}{ext}"] = None
    bad = {
        "z_corrupt.jpg": (corrupt_jpeg(), {"corrupt", "truncated"}),
        "z_truncated.jpg": (truncated_jpeg(), {"truncated"}),
        "z_gray.jpg": (encode(gray(colour_photo(40, (200, 150)))), {"monochrome"}),
        "z_sepia.jpg": (encode(sepia(colour_photo(41, (200, 150)))), {"monochrome"}),
        "z_dup_copy.jpg": ((folder / "good0.jpg").read_bytes(), {"duplicate"}),
        "z_dup_as_png.png": (encode(Image.open(folder / "good1.jpg"), "PNG"), {"duplicate"}),
        "z_page.jpg": (b"<html>an error page saved as .jpg</html>", {"not_an_image"}),
        "z_notes.txt": (b"curator's notes", {"not_an_image"}),
        "z_tiny.png": (encode(colour_photo(42, (40, 30)), "PNG"), {"too_small"}),
        "z_empty.jpg": (b"", {"empty"}),
    }
    for name, (data, reasons) in bad.items():
        (folder / name).write_bytes(data)
        expected[name] = reasons
    return expected


def read_shards(out: str, scratch: Path) -> dict[str, dict]:
    """Every sample of every shard under ``out`` via webdataset: key -> {jpg bytes, json, shard}."""
    fs, root = fsspec.core.url_to_fs(out)
    samples = {}
    for shard in sorted(fs.glob(f"{root}/shards/*.tar")):
        local = scratch / Path(shard).name
        fs.get_file(shard, str(local))
        for s in wds.WebDataset(str(local), shardshuffle=False):
            samples[s["__key__"]] = {
                "jpg": s["jpg"],
                "json": json.loads(s["json"]),
                "shard": Path(shard).stem,
            }
    return samples


@pytest.mark.usefixtures("prefect_server", "koala_env")
def test_mixed_sources_accept_every_good_image_and_explain_the_rest(
    tmp_path: Path, http_server: FixtureServer
) -> None:
    folder = tmp_path / "collection"
    expected = make_mixed_folder(folder)
    http_server.files.update(
        {
            "web1.jpg": encode(colour_photo(20)),
            "web2.jpg": encode(colour_photo(21)),
            "trunc.jpg": truncated_jpeg(22),
        }
    )
    http_server.slow_seconds = 4
    urls = ["web1.jpg", "web2.jpg", "nope.jpg", "html", "trunc.jpg", "slow/web1.jpg", "huge"]
    (tmp_path / "urls.txt").write_text("\n".join(f"{http_server.url}/{u}" for u in urls))
    out = tmp_path / "out"

    args = {
        "sources": [str(folder), str(tmp_path / "urls.txt")],
        "out": str(out),
        "shard_size": 3,
        "splits": "0.6,0.2,0.2",
        "chunk_size": 4,
        "max_rejected_fraction": 0.9,
    }
    stats = build_dataset(**args)

    index = pd.read_parquet(out / "index.parquet")
    assert len(index) == len(expected) + len(urls) == stats["inputs"]
    by_name = {
        Path(u).name: row for u, row in zip(index["uri"], index.to_dict("records"), strict=True)
    }
    for name, reasons in expected.items():
        row = by_name[name]
        if reasons is None:
            assert row["status"] == "accepted", (name, row["reason"], row["detail"])
        else:
            assert row["status"] == "rejected" and row["reason"] in reasons, (name, row)
            assert row["detail"]
    web = index[index["uri"].str.startswith("http")].set_index("uri")["reason"]
    assert web.isna().sum() == 2
    assert web[f"{http_server.url}/nope.jpg"] == "download_failed"
    assert web[f"{http_server.url}/html"] == "not_an_image"
    assert web[f"{http_server.url}/trunc.jpg"] == "truncated"
    assert web[f"{http_server.url}/slow/web1.jpg"] == "download_timeout"
    assert web[f"{http_server.url}/huge"] == "too_large"

    # shards read back with webdataset hold exactly the accepted images, with the same pixels
    samples = read_shards(str(out), tmp_path)
    accepted = index[index["status"] == "accepted"]
    assert set(samples) == set(accepted["key"])
    for row in accepted.to_dict("records"):
        s = samples[row["key"]]
        assert s["shard"] == row["shard"] and row["shard"].startswith(row["split"])
        assert s["json"]["uri"] == row["uri"] and s["json"]["sha256"] == row["sha256"]
        with fsspec.open(row["uri"], "rb") as f:
            original = f.read()
        got, want = rgb_array(s["jpg"]).astype(int), rgb_array(original).astype(int)
        if row["uri"].endswith(".jpg"):
            assert s["jpg"] == original and (got == want).all()  # clean JPEG stored as is
        else:
            assert np.abs(got - want).mean() < 2.0  # PNG re-encoded as JPEG q95
    for shard in set(accepted["shard"]):
        st = json.loads((out / "shards" / f"{shard}.stats.json").read_text())
        assert st["count"] == int((accepted["shard"] == shard).sum()) <= 3
        assert st["bytes"] > 0 and st["seconds"] > 0
    assert sum(
        json.loads(p.read_text())["reasons"].get("accepted", 0)
        for p in (out / "shards").glob("*.stats.json")
    ) == len(accepted)

    # a rerun is a no-op that rewrites no shard and gives the same index
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    build_dataset(**args)
    assert mtimes == {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = pd.read_parquet(out / "index.parquet")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), index.drop(columns="seconds"))


@pytest.mark.usefixtures("prefect_server")
def test_s3_sources_and_output(tmp_path: Path, s3: str) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        (folder / f"p{i}.jpg").write_bytes(encode(colour_photo(30 + i)))
    with tarfile.open(tmp_path / "more.tar", "w") as t:
        for i in range(2):
            (tmp_path / f"t{i}.jpg").write_bytes(encode(colour_photo(50 + i)))
            t.add(tmp_path / f"t{i}.jpg", arcname=f"more/t{i}.jpg")
    fs = fsspec.filesystem("s3")
    fs.put(str(folder), f"{s3}/in/photos", recursive=True)
    fs.put_file(str(tmp_path / "more.tar"), f"{s3}/in/more.tar")

    out = f"{s3}/datasets/demo"
    stats = build_dataset(
        sources=[f"{s3}/in/photos/", f"{s3}/in/more.tar"],
        out=out,
        shard_size=4,
        splits="0.5,0.25,0.25",
        chunk_size=3,
    )
    assert stats["accepted"] == 6
    index = storage.read_parquet(f"{out}/index.parquet")
    assert len(index) == 6 and (index["status"] == "accepted").all()
    assert index["uri"].str.startswith(("s3://", "tar://")).all()
    samples = read_shards(out, tmp_path)
    assert set(samples) == set(index["key"])
    names = fs.ls(f"{s3}/datasets/demo/shards")
    assert not [n for n in names if ".tmp" in n]  # no partial objects left behind
    assert fs.exists(f"{out}/{OUTPUT_MARKER}")
    refs = enumerate_inputs([f"{s3}/in/photos/", f"{s3}/in/more.tar"], str(tmp_path))
    etags = {f"s3://{k}": v["ETag"].strip('"') for k, v in fs.find(f"{s3}/in", detail=True).items()}
    for ref in refs[:4]:  # objects: size and ETag
        assert ref.stamp == f"{fs.size(ref.uri)}:{etags[ref.uri]}"
    assert [ref.stamp.split(":")[0] for ref in refs[4:]] == [  # tar members: size and mtime
        str((tmp_path / f"t{i}.jpg").stat().st_size) for i in range(2)
    ]


def _cli_env(prefect_api: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=prefect_api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        KOALA_HTTP_CONCURRENCY="2",
        KOALA_HTTP_TIMEOUT_S="10",
        PYTHONUNBUFFERED="1",
    )
    return env


def _koala(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def test_killed_run_resumes_to_the_same_output(
    tmp_path: Path, http_server: FixtureServer, prefect_server: str
) -> None:
    """kill -9 in the middle of a run, rerun: the output equals an uninterrupted run's."""
    for i in range(16):
        http_server.files[f"i{i}.jpg"] = encode(colour_photo(100 + i))
    http_server.files["bad.jpg"] = truncated_jpeg()
    http_server.slow_seconds = 0.4
    lines = [f"{http_server.url}/slow/i{i}.jpg" for i in range(16)] + [f"{http_server.url}/bad.jpg"]
    (tmp_path / "urls.txt").write_text("\n".join(lines))
    args = [
        "build-dataset",
        "--source",
        str(tmp_path / "urls.txt"),
        "--shard-size",
        "5",
        "--chunk-size",
        "4",
        "--splits",
        "0.6,0.2,0.2",
        "--max-rejected-fraction",
        "0.9",
    ]
    env = _cli_env(prefect_server)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _koala(*args, "--out", str(killed)),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "_staging" / "chunks").glob("*.parquet")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "index.parquet").exists(), "the run finished before it could be killed"
    assert list((killed / "_staging" / "chunks").glob("*.parquet"))

    subprocess.run(
        _koala(*args, "--out", str(killed)), env=env, cwd=ROOT, check=True, capture_output=True
    )
    clean = tmp_path / "clean"
    subprocess.run(
        _koala(*args, "--out", str(clean)), env=env, cwd=ROOT, check=True, capture_output=True
    )

    a = pd.read_parquet(killed / "index.parquet").drop(columns="seconds")
    b = pd.read_parquet(clean / "index.parquet").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)
    assert (a["status"] == "accepted").sum() == 16
    shards_a = sorted(p.name for p in (killed / "shards").glob("*.tar"))
    assert shards_a == sorted(p.name for p in (clean / "shards").glob("*.tar"))
    for name in shards_a:  # shards are byte-identical (fixed member mtimes)
        assert (killed / "shards" / name).read_bytes() == (clean / "shards" / name).read_bytes()
    assert not list(killed.rglob(".*.tmp-*")), "a temporary file was left behind"


@pytest.mark.parametrize(
    ("source", "out", "message"),
    [
        ("{tmp}/missing", "{tmp}/out", "does not exist"),
        ("{tmp}/empty", "{tmp}/out", "no images found under"),
        ("gopher://host/images/", "{tmp}/out", "unsupported URL scheme 'gopher'"),
        ("{tmp}/photos", "{tmp}/afile/out", "is not writable"),
        ("{tmp}/photos", "{tmp}/photos/ds", "lies inside the input"),
        ("{tmp}/photos/", "{tmp}", "contains the input"),
    ],
    ids=["missing", "empty", "scheme", "unwritable", "out-inside-input", "out-above-input"],
)
def test_cli_bad_input_is_one_clear_line(
    tmp_path: Path, source: str, out: str, message: str, prefect_server: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(encode(colour_photo(1)))
    (tmp_path / "afile").write_text("a file, not a folder")
    result = CliRunner().invoke(
        app,
        [
            "build-dataset",
            "--source",
            source.format(tmp=tmp_path),
            "--out",
            out.format(tmp=tmp_path),
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("koala: error:") and message in lines[0]


@pytest.mark.usefixtures("prefect_server", "koala_env")
def test_quality_gate_fails_the_flow_with_the_failing_expectation(tmp_path: Path) -> None:
    folder = tmp_path / "mostly_bad"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(encode(colour_photo(3)))
    for i in range(3):
        (folder / f"bad{i}.jpg").write_bytes(truncated_jpeg(60 + i))
    with pytest.raises(DataQualityError, match=r"expect_column_mean_to_be_between.*rejected"):
        build_dataset(
            sources=[str(folder)],
            out=str(tmp_path / "out"),
            splits="1,0,0",
            max_rejected_fraction=0.5,
        )


@pytest.mark.usefixtures("prefect_server", "koala_env")
def test_runs_on_a_dask_cluster_when_a_scheduler_is_configured(tmp_path: Path) -> None:
    from distributed import LocalCluster

    from infra.runners import task_runner

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        (folder / f"p{i}.jpg").write_bytes(encode(colour_photo(70 + i)))
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        runner = task_runner(cluster.scheduler_address)
        assert type(runner).__name__ == "DaskTaskRunner"
        flow = build_dataset.with_options(task_runner=runner)
        stats = flow(sources=[str(folder)], out=str(tmp_path / "out"), chunk_size=2, splits="1,0,0")
        transitions = cluster.scheduler.transition_counter  # tasks went through Dask
    assert stats["accepted"] == 6
    assert transitions >= 2 * 4  # 3 ingest chunks + 1 shard, each at least released->memory
