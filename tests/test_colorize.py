"""colorize-archive on hostile archival inputs through the real flow (Prefect server, Dask
LocalCluster), on moto S3, after a kill -9, and through a deployment run by a real worker."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from flows.colorize import colorize_archive
from koala import storage
from koala.outputs import read_label
from koala.scans import HasColour, read_scan
from koala.sources import InputRef
from models.config import FLAGSHIP
from tasks.colorize import INDEX_COLUMNS, output_names, relative_name
from tests.fixtures import colour_photo, encode, sepia, truncated_jpeg

ROOT = Path(__file__).resolve().parent.parent


def _gray(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    return colour_photo(seed, size).convert("L")


def hostile_collection(folder: Path) -> dict[str, str]:
    """Every kind of input an archive holds; returns file name -> expected status."""
    folder.mkdir(parents=True)
    expected = {}

    def put(name: str, data: bytes, status: str) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[name] = status

    put("gray8.png", encode(_gray(1), "PNG"), "ok")
    levels = (np.asarray(_gray(2)).astype(np.uint16) * 257) + np.arange(120)[:, None].astype(
        np.uint16
    )
    buf = io.BytesIO()
    tifffile.imwrite(buf, levels)
    put("scans/gray16.tif", buf.getvalue(), "ok")
    pages = io.BytesIO()
    _gray(3).save(pages, "TIFF", save_all=True, append_images=[_gray(4), _gray(5)])
    put("scans/multipage.tif", pages.getvalue(), "ok")
    put("cmyk.jpg", encode(_gray(6).convert("CMYK")), "ok")
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    _gray(7, (160, 100)).save(rotated, "JPEG", exif=exif)
    put("rotated.jpg", rotated.getvalue(), "ok")
    put("sepia_scan.jpg", encode(sepia(colour_photo(8))), "ok")
    la = _gray(9).convert("LA")
    put("alpha.png", encode(la, "PNG"), "ok")
    put("palette.png", encode(_gray(10).convert("P"), "PNG"), "ok")
    put("bilevel.png", encode(_gray(11).convert("1"), "PNG"), "ok")
    put("gray.webp", encode(_gray(12), "WEBP"), "ok")
    put("colour_photo.jpg", encode(colour_photo(13)), "skipped_color")
    put("truncated.jpg", truncated_jpeg(), "failed")
    put("corrupt.png", b"\x89PNG\r\n\x1a\n" + os.urandom(400), "failed")
    put("empty.jpg", b"", "failed")
    put("notes.txt", b"not an image at all", "failed")
    put("tiny.png", encode(_gray(14, (20, 20)), "PNG"), "failed")
    return expected


def _by_name(index: pd.DataFrame, folder: Path) -> dict[str, pd.Series]:
    return {str(Path(r.input_uri).relative_to(folder)): r for _, r in index.iterrows()}


def test_read_scan_keeps_precision_orientation_and_pages() -> None:
    base = np.asarray(_gray(1)).astype(np.uint16) * 257
    buf = io.BytesIO()
    tifffile.imwrite(buf, base + 1)
    scan = read_scan(buf.getvalue())
    assert scan.bit_depth == 16 and scan.input_mode.startswith("I;16")
    buf2 = io.BytesIO()
    tifffile.imwrite(buf2, base)
    lower = read_scan(buf2.getvalue())
    assert (scan.lightness > lower.lightness).all()  # one 16-bit level apart is kept
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    _gray(2, (160, 100)).save(rotated, "JPEG", exif=exif)
    assert (read_scan(rotated.getvalue()).width, read_scan(rotated.getvalue()).height) == (100, 160)
    pages = io.BytesIO()
    _gray(3).save(pages, "TIFF", save_all=True, append_images=[_gray(4)])
    assert "2 pages" in read_scan(pages.getvalue()).note
    with pytest.raises(HasColour):
        read_scan(encode(colour_photo(5)))
    assert read_scan(encode(colour_photo(5)), treat_as="monochrome").bit_depth == 8
    assert read_scan(encode(sepia(colour_photo(6)))).input_mode == "RGB"  # toned: colorized


def test_output_names_mirror_the_collection_without_collisions() -> None:
    refs = [
        InputRef("k1aaaaaaaa", 0, "/arch/box1/a.png", "/arch"),
        InputRef("k2bbbbbbbb", 1, "/arch/box1/a.tif", "/arch"),
        InputRef("k3cccccccc", 2, "tar://scans/b.jpg::/x/batch.tar", "/x/batch.tar"),
        InputRef("k4dddddddd", 3, "https://example.org/img/c.jpg?x=1", "/x/urls.txt"),
        InputRef("k5eeeeeeee", 4, "s3://bucket/in/d/e.webp", "s3://bucket/in/"),
    ]
    names = output_names(refs)
    assert names["k1aaaaaaaa"] == "box1/a-k1aaaaaa" and names["k2bbbbbbbb"] == "box1/a-k2bbbbbb"
    assert relative_name(refs[2]) == "scans/b" and names["k3cccccccc"] == "scans/b"
    assert names["k4dddddddd"] == "example.org/img/c" and names["k5eeeeeeee"] == "d/e"


def test_hostile_collection_through_the_flow(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    folder = tmp_path / "archive"
    expected = hostile_collection(folder)
    out = tmp_path / "out"
    result = colorize_archive(
        input=str(folder), output=str(out), registry=registry, format="tiff", batch_size=4
    )
    index = pd.read_parquet(out / "index")
    assert list(index.columns) == INDEX_COLUMNS and len(index) == len(expected)
    rows = _by_name(index, folder)
    assert {n: r["status"] for n, r in rows.items()} == expected
    for name, row in rows.items():
        if row["status"] != "ok":
            assert row["output_uri"] is None and row["reason"]
            continue
        data = Path(row["output_uri"]).read_bytes()
        assert read_label(data) == f"Colorized by Koala {FLAGSHIP}@{row['model_version']}"
        page = tifffile.TiffFile(io.BytesIO(data)).pages[0]
        assert page.shape[:2] == (row["height"], row["width"]), name
        assert page.shape[2] == 3 and page.dtype == (np.uint16 if "gray16" in name else np.uint8)
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (100, 160)
    assert "3 pages" in rows["scans/multipage.tif"]["note"]
    assert rows["scans/gray16.tif"]["bit_depth"] == 16
    assert rows["cmyk.jpg"]["input_mode"] == "CMYK"
    assert rows["truncated.jpg"]["reason"].startswith("truncated")
    assert rows["empty.jpg"]["reason"].startswith("empty")
    assert rows["notes.txt"]["reason"].startswith("not_an_image")
    assert rows["tiny.png"]["reason"].startswith("too_small")
    assert result["counts"] == index["status"].value_counts().to_dict()
    sheet = (out / "contact_sheet.html").read_text()
    assert "contact/" in sheet and "truncated.jpg" in sheet
    for src in [s.split("'")[0] for s in sheet.split("src='")[1:]]:
        assert (out / src).exists(), src
    # a rerun with the same model version does nothing and adds no row
    again = colorize_archive(input=str(folder), output=str(out), registry=registry)
    assert again["inputs"] == len(expected)
    assert len(pd.read_parquet(out / "index")) == len(expected)


def test_png_and_jpeg_outputs_are_labelled(tmp_path: Path, registry: str) -> None:
    from koala.outputs import encode_output

    rgb = np.asarray(colour_photo(1))
    for fmt in ("jpg", "png", "tiff"):
        data = encode_output(rgb, fmt, "unet", "v9", "0" * 64)
        assert read_label(data) == "Colorized by Koala unet@v9"
        img = Image.open(io.BytesIO(data))
        xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
        xmp = xmp.decode() if isinstance(xmp, bytes) else xmp
        assert "compositeWithTrainedAlgorithmicMedia" in xmp and "unet" in xmp, fmt


def test_s3_input_and_output(s3: str, registry: str, prefect_server: str) -> None:
    fs, _ = storage.get_fs(s3)
    for i in range(3):
        fs.pipe(f"{s3[5:]}/in/scan{i}.png", encode(_gray(20 + i), "PNG"))
    fs.pipe(f"{s3[5:]}/in/colour.jpg", encode(colour_photo(30)))
    result = colorize_archive(input=f"{s3}/in", output=f"{s3}/out", registry=registry)
    assert result["counts"] == {"ok": 3, "skipped_color": 1}
    index = storage.read_parquet(f"{s3}/out/index")
    assert len(index) == 4
    for uri in index.loc[index["status"] == "ok", "output_uri"]:
        assert uri.startswith(f"{s3}/out/images/scan") and uri.endswith(".png")
        assert read_label(storage.read_bytes(uri)).startswith(f"Colorized by Koala {FLAGSHIP}@")
    assert storage.exists(f"{s3}/out/contact_sheet.html")


def _cli_env(prefect_server: str) -> dict[str, str]:
    return os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PYTHONPATH": str(ROOT),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def _no_prefect(*_args, **_kwargs) -> None:
    raise AssertionError("Prefect started before the command's checks failed")


def test_fail_fast_with_one_line(
    tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.main._ready", _no_prefect)
    (tmp_path / "empty").mkdir()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(_gray(1), "PNG"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = {
        "does not exist": ["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")],
        "no images": ["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")],
        "not writable": ["--input", str(tmp_path / "in"), "--output", str(blocker / "sub")],
        "no model named 'vgg'": [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "o"),
            "--model",
            "vgg",
        ],
        "'webp' is not one of 'auto', 'jpg', 'png', 'tiff'": [
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "o"),
            "--format",
            "webp",
        ],
    }
    for words, args in cases.items():
        out = CliRunner().invoke(app, ["colorize", *args, "--registry", registry])
        assert out.exit_code == 2, out.output
        assert words in out.output and out.output.count("\n") == 1, out.output
    assert not (tmp_path / "o" / "images").exists()


def test_kill_and_rerun_has_no_duplicate_and_no_missing_row(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    for i in range(24):
        (folder / f"s{i:02d}.png").write_bytes(encode(_gray(40 + i, (400, 300)), "PNG"))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "cli.main", "colorize", "--input", str(folder)]
    args += ["--output", str(out), "--registry", registry, "--batch-size", "2", "--workers", "1"]
    env = _cli_env(prefect_server)
    proc = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "index").glob("*.parquet"))) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # its Dask workers may finish their batch: harmless
    proc.wait()
    parts = len(list((out / "index").glob("*.parquet")))
    assert 2 <= parts < 12, "the run finished before it could be killed"
    subprocess.run(args, env=env, cwd=ROOT, check=True, capture_output=True, timeout=600)
    index = pd.read_parquet(out / "index")
    assert len(index) == 24 and index["input_uri"].is_unique
    assert set(index["status"]) == {"ok"}
    assert len(list((out / "images").glob("*.png"))) == 24  # --format auto keeps PNG
    assert not list(out.rglob(".*.tmp-*")), "a temporary file was left behind"
