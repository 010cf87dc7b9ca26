"""The pages a person reads: the contact sheet (every skipped and failed input named, paged;
labelled before/after pairs linked to the full-resolution outputs; paths relative to the
collection; sortable by confidence) and the evaluation report (glossary, labelled samples,
a warning when a model saw the scored split)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.contact_sheet import (
    collection_root,
    output_href,
    relative_name,
    write_contact_sheet,
)
from tasks.evaluate import (
    GLOSSARY,
    TABLE_COLUMNS,
    index_sha256,
    split_overlap_warning,
    write_report,
)
from tasks.thumbnails import make_thumb, thumb_uris
from tests.fixtures import colour_photo, encode

MODEL = "chroma_unet@v3"


def _ok_row(src: Path, out: Path, i: int, confidence: float | None) -> dict:
    """A colorized input under a folder with a space, a name with '#', its output and thumbs."""
    name = f"box {i // 2}/scan #{i}.tif"
    photo = colour_photo(i, (120 + 10 * i, 90))
    image = out / "images" / name.replace(".tif", ".png")
    image.parent.mkdir(parents=True, exist_ok=True)
    photo.save(image)
    key = f"k{i:04d}"
    before, after = thumb_uris(str(out), key)
    Path(before).parent.mkdir(parents=True, exist_ok=True)
    Path(before).write_bytes(make_thumb(photo.convert("L")))
    Path(after).write_bytes(make_thumb(photo))
    return {
        "input_uri": str(src / name),
        "output_uri": str(image),
        "status": "ok",
        "reason": None,
        "width": photo.width,
        "height": photo.height,
        "input_mode": "L",
        "bit_depth": 8,
        "confidence": confidence,
        "key": key,
        "ordinal": i,
    }


def _bad_row(src: Path, i: int, status: str, reason: str) -> dict:
    return {
        "input_uri": str(src / "bad" / f"{status}-{i:03d}.jpg"),
        "output_uri": None,
        "status": status,
        "reason": reason,
        "width": None,
        "height": None,
        "input_mode": None,
        "bit_depth": None,
        "confidence": None,
        "key": f"x{status}{i:04d}",
        "ordinal": 1000 + i,
    }


def _run(
    tmp_path: Path,
    ok: int = 4,
    failed: int = 0,
    skipped: int = 0,
    confidences: list[float | None] | None = None,
) -> tuple[Path, Path, pd.DataFrame]:
    """(collection, DST, index) of a synthetic run."""
    src, out = tmp_path / "My Archive", tmp_path / "dst"
    confidences = confidences or [round(0.9 - 0.2 * i, 2) for i in range(ok)]
    rows = [_ok_row(src, out, i, confidences[i]) for i in range(ok)]
    rows += [_bad_row(src, i, "failed", f"truncated: <b>{i}</b> bytes") for i in range(failed)]
    rows += [_bad_row(src, i, "skipped_color", f"has colour: {i}") for i in range(skipped)]
    return src, out, pd.DataFrame(rows)


def _pages(out: Path) -> list[str]:
    """The sheet and every page it links to, following the page links."""
    seen, todo = [], ["contact_sheet.html"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo += re.findall(r"href='(contact_sheet-[^'#]+\.html)'", (out / name).read_text())
    return [(out / name).read_text() for name in seen]


def _listed(pages: list[str], status: str) -> dict[str, str]:
    """Input name -> reason of every listed row of ``status`` (names from their title)."""
    found: dict[str, str] = {}
    for page in pages:
        for uri, reason in re.findall(
            r"<td title='([^']+)'><code>[^<]*</code></td><td>([^<]*)</td>", page
        ):
            if f"/{status}-" in uri:
                assert unescape(uri) not in found, f"{uri} listed twice"
                found[unescape(uri)] = unescape(reason)
    return found


def test_every_failed_and_skipped_input_is_named_with_its_reason(tmp_path: Path) -> None:
    _, out, index = _run(tmp_path, ok=2, failed=260, skipped=3)
    sheet = Path(write_contact_sheet(str(out), index, MODEL)).read_text()
    assert "Rows 1–200 of 260" in sheet and "failed: 260 inputs" in sheet
    assert (out / "contact_sheet-failed-2.html").exists()
    assert not (out / "contact_sheet-failed-3.html").exists()
    pages = _pages(out)
    failed = _listed(pages, "failed")
    want = {r.input_uri: r.reason for r in index[index["status"] == "failed"].itertuples()}
    assert failed == want  # all 260, each with its own reason, none twice
    assert "&lt;b&gt;7&lt;/b&gt;" in sheet and "<b>7</b>" not in sheet
    skipped = _listed(pages, "skipped_color")
    assert skipped == {
        r.input_uri: r.reason for r in index[index["status"] == "skipped_color"].itertuples()
    }
    counts = re.findall(r"<tr><th>(\w+)</th><td class='n'>(\d+)</td>", sheet)
    assert dict(counts) == {"failed": "260", "skipped_color": "3", "ok": "2", "total": "265"}


def test_a_shorter_list_removes_the_pages_of_a_longer_one(tmp_path: Path) -> None:
    _, out, index = _run(tmp_path, ok=1, failed=450)
    write_contact_sheet(str(out), index, MODEL)
    assert (out / "contact_sheet-failed-3.html").exists()
    sheet = Path(write_contact_sheet(str(out), index.head(11), MODEL)).read_text()
    assert not list(out.glob("contact_sheet-*.html"))
    assert "Rows 1–10 of 10" in sheet and "Pages:" not in sheet
    assert len(_listed([sheet], "failed")) == 10


def test_pairs_are_labelled_and_link_to_the_full_resolution_outputs(tmp_path: Path) -> None:
    _, out, index = _run(tmp_path, ok=4, failed=1)
    sheet = Path(write_contact_sheet(str(out), index, MODEL)).read_text()
    samples = sheet.split("Before and after", 1)[1]
    pairs = re.findall(r"<figure class='pair'.*?</figure></div>", samples)
    assert len(pairs) == 4
    for pair, row in zip(pairs, index.itertuples(), strict=False):
        assert "<figcaption>grayscale input</figcaption>" in pair
        assert "<figcaption>colorized" in pair
        hrefs = set(re.findall(r"href='([^']+)'", pair))
        assert len(hrefs) == 1  # the thumbnail and the "full resolution" link
        href = unescape(hrefs.pop())
        assert not href.startswith("/") and (out / unquote(href)).resolve() == Path(row.output_uri)
    for link in re.findall(r"(?:src|href)='([^'#]+)'", sheet):
        assert (out / unquote(unescape(link))).is_file(), link


def test_captions_are_relative_to_the_collection(tmp_path: Path) -> None:
    src, out, index = _run(tmp_path, ok=3, failed=2)
    sheet = Path(write_contact_sheet(str(out), index, MODEL)).read_text()
    assert "<b>box 0/scan #1.tif</b>" in sheet and "<code>bad/failed-001.jpg</code>" in sheet
    assert f"title='{src}/box 1/scan #2.tif'" in sheet  # the full URI stays at hand
    shown = re.sub(r"title='[^']*'", "", sheet)
    assert shown.count(str(src)) == 1  # once: "relative to the collection ..."
    given = Path(write_contact_sheet(str(out), index, MODEL, collection=str(tmp_path))).read_text()
    assert "<b>My Archive/box 0/scan #1.tif</b>" in given


def test_collection_root_and_links() -> None:
    assert collection_root(["/a/b/x.jpg", "/a/b/c/y.jpg"]) == "/a/b/"
    assert collection_root(["/a/b/x.jpg"]) == "/a/b/"
    assert collection_root(["/ab/x.jpg", "/ac/y.jpg"]) == "/"  # folders, not characters
    assert collection_root(["s3://bkt/in/x.png", "s3://bkt/in/y/z.png"]) == "s3://bkt/in/"
    assert collection_root(["/a/b/x.jpg"], "/a") == "/a/"
    assert collection_root(["/a/b/x.jpg"], "/a/b/x.jpg") == "/a/b/"  # a single-file source
    assert collection_root(["/a/x.jpg", "/b/y.jpg"], "/a") == "/"  # not under the root
    members = ["tar://p/x.jpg::/data/t.tar", "tar://p/q/y.jpg::/data/t.tar"]
    root = collection_root(members)
    assert [relative_name(u, root) for u in members] == ["x.jpg", "q/y.jpg"]
    assert output_href("/d", "/d/images/a #1.png") == "images/a%20%231.png"
    assert output_href("/d", "/elsewhere/a.png") == "../elsewhere/a.png"
    assert output_href("s3://b/d", "s3://b/d/images/a.png") == "images/a.png"
    assert output_href("s3://b/d", "s3://other/a.png") == "s3://other/a.png"


def test_sorting_by_confidence_is_offered_only_with_confidences(tmp_path: Path) -> None:
    _, out, index = _run(tmp_path, ok=4, confidences=[0.5, None, 0.2, 0.9])
    sheet = Path(write_contact_sheet(str(out), index, MODEL)).read_text()
    assert "least confident first</button>" in sheet and "<script src" not in sheet
    order = re.findall(r"data-confidence='([^']*)'", sheet.split("id='grid'", 1)[1])
    assert order == ["0.500000", "", "0.200000", "0.900000"]  # collection order
    assert "Review first" not in sheet  # the sample holds every result: each is shown once
    assert sheet.count("<figure class='pair'") == 4
    Path(thumb_uris(str(out), "k0003")[1]).unlink()  # a result outside the sample
    sheet = Path(write_contact_sheet(str(out), index, MODEL)).read_text()
    review = sheet.split("Review first", 1)[1].split("Before and after", 1)[0]
    assert re.findall(r"confidence (\d\.\d\d)", review) == ["0.20", "0.50", "0.90"]
    index["confidence"] = None
    plain = Path(write_contact_sheet(str(out), index, MODEL)).read_text()
    assert "sortGrid" not in plain and "Review first" not in plain


@pytest.mark.skipif(not shutil.which("chromium"), reason="no chromium")
def test_the_grid_sorts_in_a_browser(tmp_path: Path) -> None:
    _, out, index = _run(tmp_path, ok=4, confidences=[0.5, None, 0.2, 0.9])
    sheet = write_contact_sheet(str(out), index, MODEL)
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--dump-dom", f"file://{sheet}#least-confident"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    grid = dom.split('id="grid"', 1)[1]
    assert re.findall(r'data-confidence="([^"]*)"', grid) == [
        "0.200000",
        "0.500000",
        "0.900000",
        "",
    ]
    assert '<p class="sort" id="sort">' in dom  # shown once the script runs


def test_user_text_is_escaped(tmp_path: Path) -> None:
    _, out, index = _run(tmp_path, ok=1, failed=1)
    index.loc[1, "input_uri"] = str(tmp_path / "My Archive" / "<script>alert(1)</script>'.jpg")
    index.loc[0, "input_mode"] = "<i>L</i>"
    sheet = Path(write_contact_sheet(str(out), index, "<b>evil</b>")).read_text()
    assert "<script>alert" not in sheet and "<b>evil" not in sheet and "<i>L" not in sheet
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#x27;.jpg" in sheet


# -- the evaluation report --------------------------------------------------------------------

NAMES = ["gray", "mean_ab", "unet@v2"]


def _summary() -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for i, n in enumerate(NAMES):
        out[n] = {c: float(rng.uniform(0.1, 0.9)) for c in TABLE_COLUMNS} | {"images": 3}
        out[n]["psnr"] = 20.0 + i  # the model is best on PSNR
        out[n]["fd_lite0"] = 10.0 - i  # and on FD-lite0
    return out


def _report(tmp_path: Path, split: str = "test", cards=None, sha=None, samples: int = 2) -> str:
    jpg = encode(colour_photo(5, (500, 300)))
    grid = [{"key": f"s{i}", **{n: jpg for n in [*NAMES, "ground_truth"]}} for i in range(samples)]
    metrics = pd.DataFrame([{"key": "s0", "model": n, "split": split, "psnr": 1.0} for n in NAMES])
    report = tmp_path / "report"
    write_report(str(report), metrics, _summary(), grid, NAMES, split, cards=cards,
                 data_index_sha256=sha)  # fmt: skip
    return (report / "index.html").read_text()


def test_report_explains_every_metric_column(tmp_path: Path) -> None:
    page = _report(tmp_path)
    glossary = page.split("id='glossary'", 1)[1].split("</table>", 1)[0]
    head = page.split("<table class='metrics'>", 1)[1].split("</tr>", 1)[0]
    for col in TABLE_COLUMNS:
        label, unit, meaning = GLOSSARY[col]
        assert f"<tr id='m-{col}'>" in glossary and f"<code>{col}</code>" in glossary
        assert unit in unescape(glossary) and meaning in unescape(glossary)
        assert f">{label}</a><br><small>{unit}</small>" in unescape(head)
        assert f"title='{col}: " in head and f"href='#m-{col}'" in head
        assert f"<th>{col}</th>" not in head  # a human header, not the raw name
    arrows = dict(re.findall(r"title='(\w+): [^']*'>.*?</small> (\S*)</th>", head))
    assert arrows["psnr"] == "↑" and arrows["ssim"] == "↑" and arrows["ab_acc_10"] == "↑"
    assert (
        arrows["ab_mae"] == "↓"
        and arrows["fd_lite0"] == "↓"
        and arrows["colourfulness_ratio"] == "→1"
    )
    model_row = page.split("<tr><th>unet@v2</th>", 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<td class='(\w*)'>", model_row)
    assert cells[TABLE_COLUMNS.index("psnr")] == "best" == cells[TABLE_COLUMNS.index("fd_lite0")]


def test_report_samples_are_large_and_labelled_beside_the_truth(tmp_path: Path) -> None:
    page = _report(tmp_path, samples=2)
    assert page.count("<img") == 2 * 4 and "width:384px" in page
    samples = re.findall(r"<div class='sample'>(.*?)</div>", page)
    assert len(samples) == 2
    for sample in samples:
        labels = re.findall(r"<figcaption>([^<]*)</figcaption>", sample)
        assert labels == [
            "ground truth (original colour)",
            "model: unet@v2",
            "baseline: gray (a*b* = 0)",
            "baseline: mean a*b* of the training split",
        ]
        for src in re.findall(r"src='([^']+)'", sample):
            assert Image.open(tmp_path / "report" / unquote(src)).width == 500  # not shrunk
    assert "class='truth'" in page


def test_split_overlap_warning() -> None:
    sha = "a" * 64
    card = {"name": "unet", "version": "v2", "data_index_sha256": sha}
    assert "optimistic" in split_overlap_warning(card, sha, "train")
    assert "unet@v2" in split_overlap_warning(card, sha, "val")
    assert split_overlap_warning(card, sha, "test") is None
    assert split_overlap_warning(card, "b" * 64, "val") is None  # another dataset
    assert split_overlap_warning(card, None, "val") is None
    assert split_overlap_warning({"name": "old"}, sha, "val") is None


def test_report_shows_the_warning_box_only_when_a_model_saw_the_split(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    pd.DataFrame({"split": ["train", "val"]}).to_parquet(root / "index.parquet")
    sha = index_sha256(str(root))
    assert sha == hashlib.sha256((root / "index.parquet").read_bytes()).hexdigest()
    assert index_sha256(str(tmp_path)) is None
    cards = [{"name": "unet", "version": "v2", "data_index_sha256": sha}]
    assert "class='warning'" in _report(tmp_path, "val", cards, sha)
    assert "class='warning'" not in _report(tmp_path, "test", cards, sha)
    assert "class='warning'" not in _report(tmp_path, "val", cards, "0" * 64)
    assert "class='warning'" not in _report(tmp_path, "val")  # the old call: no cards
