"""Enumerating sources: folders, URL lists, archives and dataset presets."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from koala.sources import SourceError, enumerate_inputs
from tests.fixtures import colour_photo, encode


def write_images(folder: Path, n: int, start: int = 0, ext: str = ".jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        p = folder / f"img{i:03d}{ext}"
        p.write_bytes(encode(colour_photo(i)))
        paths.append(p)
    return paths


def test_folder_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "b" / "c", 1, start=5, ext=".png")
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("not an image, but listed so that it is reported")
    refs = enumerate_inputs([str(tmp_path)], str(tmp_path / "_staging"))
    names = [Path(r.uri).name for r in refs]
    assert names == ["img000.jpg", "img001.jpg", "img005.png", "notes.txt"]
    assert [r.ordinal for r in refs] == [0, 1, 2, 3]
    assert len({r.key for r in refs}) == 4 and all("." not in r.key for r in refs)
    again = enumerate_inputs([str(tmp_path)], str(tmp_path / "_staging"))
    assert [r.key for r in again] == [r.key for r in refs]


def test_url_lists_txt_csv_parquet(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("# comment\nhttp://h/a.jpg\n\nhttp://h/b.jpg\n")
    pd.DataFrame({"url": ["http://h/c.jpg"], "caption": ["a cat"]}).to_csv(tmp_path / "l.csv")
    pd.DataFrame({"url": ["http://h/d.jpg", "http://h/a.jpg"]}).to_parquet(tmp_path / "l.parquet")
    refs = enumerate_inputs(
        [str(tmp_path / n) for n in ("l.txt", "l.csv", "l.parquet")], str(tmp_path)
    )
    assert [r.uri for r in refs] == [f"http://h/{c}.jpg" for c in "abcda"]
    assert refs[2].caption == "a cat"
    assert refs[4].key == refs[0].key + "-2"  # same URL twice: distinct keys


def test_csv_without_url_column_is_a_clear_error(tmp_path: Path) -> None:
    pd.DataFrame({"link": ["x"]}).to_csv(tmp_path / "l.csv")
    with pytest.raises(SourceError, match="no 'url' column"):
        enumerate_inputs([str(tmp_path / "l.csv")], str(tmp_path))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: str(p / "nope"), "does not exist"),
        (lambda p: (p / "empty").mkdir() or str(p / "empty"), "no images found under"),
        (lambda p: "gs://bucket/images/", "unsupported URL scheme 'gs'"),
        (lambda p: "gopher://x/y", "unsupported URL scheme 'gopher'"),
    ],
    ids=["missing", "empty", "gs-not-installed", "gopher"],
)
def test_bad_sources_fail_with_one_line(tmp_path: Path, make, message: str) -> None:
    source = make(tmp_path)
    with pytest.raises(SourceError, match=message) as err:
        enumerate_inputs([source], str(tmp_path / "_staging"))
    assert "\n" not in str(err.value)


def test_tar_and_zip_archives(tmp_path: Path) -> None:
    imgs = write_images(tmp_path / "src", 3)
    with tarfile.open(tmp_path / "a.tar", "w") as t:
        for p in imgs:
            t.add(p, arcname=f"photos/{p.name}")
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for p in imgs[:2]:
            z.write(p, arcname=p.name)
    refs = enumerate_inputs([str(tmp_path / "a.tar"), str(tmp_path / "a.zip")], str(tmp_path))
    assert [r.uri.split("::")[0] for r in refs] == [
        "tar://photos/img000.jpg",
        "tar://photos/img001.jpg",
        "tar://photos/img002.jpg",
        "zip://img000.jpg",
        "zip://img001.jpg",
    ]


def test_imagenet_preset_folders_and_per_class_tars(tmp_path: Path) -> None:
    root = tmp_path / "ILSVRC" / "train"
    write_images(root / "n01440764", 3)
    write_images(tmp_path / "tmp", 4, start=10)
    with tarfile.open(root / "n01443537.tar", "w") as t:
        for p in sorted((tmp_path / "tmp").iterdir()):
            t.add(p, arcname=f"n01443537_{p.name}")
    write_images(root / "n09999999", 2, start=20)
    (tmp_path / "classes.txt").write_text("n01440764 tench\nn01443537 goldfish\n")
    spec = f"imagenet:{root}?per_class=2&classes={tmp_path / 'classes.txt'}"
    refs = enumerate_inputs([spec], str(tmp_path))
    assert [r.label for r in refs] == ["n01440764"] * 2 + ["n01443537"] * 2
    everything = enumerate_inputs([f"imagenet:{root}"], str(tmp_path))
    assert len(everything) == 9


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "zip"])
def test_flickr_preset_reads_captions(tmp_path: Path, packed: bool) -> None:
    root = tmp_path / "flickr8k"
    imgs = write_images(root / "Images", 2)
    lines = ["image,caption"] + [f"{p.name},a photo number {i}" for i, p in enumerate(imgs)]
    lines.append(f"{imgs[0].name},another caption")
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    spec = str(root)
    if packed:
        with zipfile.ZipFile(tmp_path / "flickr8k.zip", "w") as z:
            for p in root.rglob("*"):
                z.write(p, arcname=str(p.relative_to(tmp_path)))
        spec = str(tmp_path / "flickr8k.zip")
    refs = enumerate_inputs([f"flickr8k:{spec}"], str(tmp_path))
    assert refs[0].caption == "a photo number 0"
    assert refs[0].captions == ("a photo number 0", "another caption")
    assert refs[1].captions == ("a photo number 1",)
