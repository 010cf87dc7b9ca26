"""An archive's files are precious: colorize never overwrites an input or an earlier output,
never reads its own outputs, retries what failed for a transient reason, supersedes the row of
a changed input, stops with one line on a full disk and resumes after it, and fails fast on a
broken registry entry or survives a truncated index part."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from flows.colorize import colorize_archive
from models.config import FLAGSHIP
from models.registry import build_model, model_dir, save_model
from tasks.archive_index import compact_index, read_index
from tasks.colorize import ColorizeConfig, colorize_batch, plan_batches, prepare_run
from tests.fixtures import colour_photo, encode

ROOT = Path(__file__).resolve().parent.parent


def _scan(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    return encode(colour_photo(seed, size).convert("L"), "PNG")


def _box(folder: Path, n: int) -> Path:
    """A folder of ``n`` small gray scans ``s0.png``..."""
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"s{i}.png").write_bytes(_scan(i))
    return folder


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _run(source: Path | str, out: Path | str, registry: str, **kw) -> dict:
    """One whole batch run without the flow: prepare, plan, colorize, as the flow does."""
    cfg = ColorizeConfig(registry, FLAGSHIP, str(out), kw.pop("format", "png"), **kw)
    refs, plan, card, index = prepare_run(str(source), cfg)
    todo = [r for block in plan_batches(refs, plan, index, card, cfg) for r in block]
    result = colorize_batch(todo, plan, cfg) if todo else {"counts": {}, "rows": 0}
    compact_index(str(out))
    return result


def test_output_at_above_or_inside_the_input_is_refused(tmp_path: Path, registry: str) -> None:
    box = tmp_path / "X" / "images"
    box.mkdir(parents=True)
    for i in range(2):
        (box / f"scan{i}.png").write_bytes(_scan(i))
    before = _checksums(tmp_path / "X")
    for out in (tmp_path / "X", box, box / "colorized"):
        args = ["colorize", "--input", str(box), "--output", str(out), "--registry", registry]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert "refus" in res.output or "inside" in res.output or "is the" in res.output
    assert _checksums(tmp_path / "X") == before


def test_an_input_listed_inside_the_output_is_refused(tmp_path: Path, registry: str) -> None:
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a.png").write_bytes(_scan(1))
    urls = tmp_path / "list.txt"
    urls.write_text(f"{out / 'images' / 'a.png'}\n")
    with pytest.raises(Exception, match="inside the output"):
        _run(urls, out, registry)


def test_two_runs_into_one_output_keep_both_results(tmp_path: Path, registry: str) -> None:
    for box, seed in (("box12", 1), ("box13", 2)):
        (tmp_path / box).mkdir()
        (tmp_path / box / "scan001.png").write_bytes(_scan(seed))
    out = tmp_path / "dst"
    assert _run(tmp_path / "box12", out, registry)["counts"] == {"ok": 1}
    first = (out / "images" / "scan001.png").read_bytes()
    assert _run(tmp_path / "box13", out, registry)["counts"] == {"ok": 1}
    index = read_index(str(out))
    assert len(index) == 2 and index["output_uri"].is_unique
    owners = dict(zip(index["input_uri"], index["output_uri"], strict=True))
    assert owners[str(tmp_path / "box12" / "scan001.png")] == str(out / "images" / "scan001.png")
    assert (out / "images" / "scan001.png").read_bytes() == first  # box12's result kept
    other = Path(owners[str(tmp_path / "box13" / "scan001.png")])
    assert other.exists() and other.name.startswith("scan001-")
    # a rerun of box12 keeps its name and adds nothing
    assert _run(tmp_path / "box12", out, registry)["rows"] == 0
    assert len(read_index(str(out))) == 2


def test_a_file_already_in_the_output_is_never_overwritten(tmp_path: Path, registry: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_scan(1))
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a.png").write_bytes(b"someone else's file")
    assert _run(src, out, registry)["counts"] == {"ok": 1}
    assert (out / "images" / "a.png").read_bytes() == b"someone else's file"
    written = Path(read_index(str(out)).iloc[0]["output_uri"])
    assert written.name.startswith("a-") and written.exists()
    # the input's own output of a run killed before its index part is replaced in place
    shutil.rmtree(out / "index")
    assert _run(src, out, registry)["counts"] == {"ok": 1}
    assert read_index(str(out)).iloc[0]["output_uri"] == str(written)


def test_unsafe_archive_members_stay_inside_the_output(tmp_path: Path, registry: str) -> None:
    import io
    import tarfile

    tar = tmp_path / "box.tar"
    with tarfile.open(tar, "w") as archive:
        for i, name in enumerate(["../evil.png", "/abs.png", "a::b.png", "ok/c.png"]):
            data = _scan(i)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    assert _run(tar, out, registry)["counts"] == {"ok": 4}
    index = read_index(str(out))
    assert len(index) == 4
    for uri in index["output_uri"]:
        assert Path(uri).resolve().is_relative_to((out / "images").resolve()), uri
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.tar", "out"]


def test_own_output_folders_are_never_read(tmp_path: Path, registry: str) -> None:
    src = _box(tmp_path / "src", 3)
    first = tmp_path / "first"
    _run(src, first, registry)
    shutil.copytree(first, src / "old-koala-run")  # an earlier output filed inside a box
    out = tmp_path / "second"
    assert _run(src, out, registry)["counts"] == {"ok": 3}
    assert len(read_index(str(out))) == 3


def test_changed_input_supersedes_and_transient_failures_retry(
    tmp_path: Path, registry: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_scan(1))
    (src / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert _run(src, out, registry)["counts"] == {"ok": 1, "failed": 1}
    old = read_index(str(out)).set_index("key")
    # the same name gets new content: redone, and its row superseded (not duplicated)
    (src / "a.png").write_bytes(_scan(7, (200, 150)))
    os.utime(src / "a.png", (1, 1))
    assert _run(src, out, registry)["counts"] == {"ok": 1}  # the corrupt file is permanent
    new = read_index(str(out)).set_index("key")
    assert len(new) == 2 and len(pd.read_parquet(out / "index")) == 2
    key = new.index[new["status"] == "ok"][0]
    assert new.loc[key, "input_sha256"] != old.loc[key, "input_sha256"]
    assert new.loc[key, "output_uri"] == old.loc[key, "output_uri"]
    assert Image.open(new.loc[key, "output_uri"]).size == (200, 150)
    # --retry-failed redoes the permanent failure (still failed: one row, a newer one)
    assert _run(src, out, registry, retry_failed=True)["counts"] == {"failed": 1}
    assert len(read_index(str(out))) == 2


def test_saturation_and_treat_as(tmp_path: Path, registry: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "colour.png").write_bytes(encode(colour_photo(3), "PNG"))
    assert _run(src, tmp_path / "a", registry)["counts"] == {"skipped_color": 1}
    row = read_index(str(tmp_path / "a")).iloc[0]
    assert row["colour_score"] > 0 and row["colour_evidence"]
    res = _run(src, tmp_path / "b", registry, treat_as="monochrome", saturation=0.0)
    assert res["counts"] == {"ok": 1}
    lab = np.asarray(Image.open(tmp_path / "b" / "images" / "colour-saturation0.png"))
    assert np.abs(lab.astype(int) - lab.mean(axis=2, keepdims=True)).max() <= 2  # gray
    with pytest.raises(Exception, match="saturation"):
        _run(src, tmp_path / "c", registry, saturation=-1.0)


def test_a_new_saturation_is_a_new_result_beside_the_old(tmp_path: Path, registry: str) -> None:
    """A rerun at another --saturation colorizes again into new files; the outputs made at 1
    stay; the index, the XMP and the contact sheet say which saturation made each."""
    from koala.outputs import read_provenance
    from koala.sources import enumerate_inputs
    from tasks.colorize_plan import run_rows
    from tasks.contact_sheet import write_contact_sheet

    src, out = _box(tmp_path / "src", 2), tmp_path / "out"
    assert _run(src, out, registry)["counts"] == {"ok": 2}
    before = _checksums(out / "images")
    assert _run(src, out, registry, saturation=1.4)["counts"] == {"ok": 2}  # never "0 new"
    after = _checksums(out / "images")
    assert {k: after[k] for k in before} == before  # the 1.0 outputs are untouched
    assert sorted(after) == ["s0-saturation1.4.png", "s0.png", "s1-saturation1.4.png", "s1.png"]
    index = read_index(str(out))
    assert sorted(index["saturation"]) == [1.0, 1.0, 1.4, 1.4]
    made = read_provenance((out / "images" / "s0-saturation1.4.png").read_bytes())
    first = read_provenance((out / "images" / "s0.png").read_bytes())
    assert (made["saturation"], first["saturation"]) == ("1.4", "1")
    assert _run(src, out, registry, saturation=1.4)["counts"] == {}  # done: nothing redone
    card = {"name": index["model"].iloc[0], "version": index["model_version"].iloc[0]}
    refs = enumerate_inputs([str(src)], str(out / "_staging"))
    rows = run_rows(index, refs, card, 1.4)
    sheet = Path(write_contact_sheet(str(out), rows, FLAGSHIP, settings={"saturation": 1.4}))
    text = sheet.read_text()
    assert "<dt>saturation</dt><dd><code>1.4</code>" in text
    assert text.count("colorized at saturation 1.4") == 2


def test_truncated_index_part_is_set_aside_and_redone(tmp_path: Path, registry: str) -> None:
    src = _box(tmp_path / "src", 3)
    out = tmp_path / "out"
    _run(src, out, registry)
    part = next((out / "index").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:100])
    assert _run(src, out, registry)["counts"] == {"ok": 3}
    assert len(read_index(str(out))) == 3
    assert list((out / "index" / "_unreadable").glob("*.parquet"))


@pytest.mark.parametrize("damage", ["header", "shapes", "card"])
def test_broken_registry_entry_fails_in_one_line(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "reg"
    version = save_model(str(root), "unet", build_model("unet", pretrained=False), {})
    folder = Path(model_dir(str(root), "unet", version))
    card = json.loads((folder / "card.json").read_text())
    if damage == "header":
        blob = b"\xff" * 64
    elif damage == "shapes":
        from safetensors.torch import save

        blob = save({"encoder.weight": __import__("torch").zeros(3)})
    if damage in ("header", "shapes"):
        (folder / "weights.safetensors").write_bytes(blob)
        card["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        (folder / "card.json").write_text(json.dumps(card))
    else:
        (folder / "card.json").write_text("{broken")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(_scan(1))
    args = ["colorize", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    res = CliRunner().invoke(app, [*args, "--registry", str(root), "--model", "unet"])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert f"unet@{version}" in res.output


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.mark.slow
def test_disk_full_stops_in_one_line_and_rerun_completes(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        noise = np.random.default_rng(i).integers(0, 255, (600, 800), dtype=np.uint8)
        (src / f"s{i:02d}.png").write_bytes(encode(Image.fromarray(noise), "PNG"))
    disk = tmp_path / "disk"
    _tmpfs(disk, "3m")
    try:
        out = disk / "out"
        env = os.environ | {"PREFECT_API_URL": prefect_server, "PYTHONPATH": str(ROOT)}
        args = [
            sys.executable,
            "-m",
            "cli.main",
            "colorize",
            "--input",
            str(src),
            "--output",
            str(out),
            "--registry",
            registry,
            "--format",
            "png",
            "--batch-size",
            "2",
            "--workers",
            "1",
        ]
        full = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert full.returncode == 1, full.stdout + full.stderr
        errors = [ln for ln in full.stderr.splitlines() if ln.startswith("koala: error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], full.stderr
        assert "Traceback" not in full.stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        index = read_index(str(out))
        assert len(index) == 12 and set(index["status"]) == {"ok"}
        assert len(pd.read_parquet(out / "index")) == 12
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_flow_reports_new_work(tmp_path: Path, registry: str, prefect_server: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_scan(1))
    out = tmp_path / "out"
    first = colorize_archive(input=str(src), output=str(out), registry=registry)
    assert first["new"] == 1 and first["counts"] == {"ok": 1}
    assert (out / ".koala-output").exists()
    again = colorize_archive(input=str(src), output=str(out), registry=registry)
    assert again["new"] == 0 and again["counts"] == {"ok": 1}
