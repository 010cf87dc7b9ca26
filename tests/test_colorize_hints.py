"""Colour hints through the real colorize-archive flow (Prefect server): sidecars beside the
scans, a hints folder and a CSV; a hinted object takes the hint's colour while the rest keeps
the model's; only hinted scans get new results, and editing one hints file redoes that scan
alone; a bad hint is one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.color import rgb2lab
from typer.testing import CliRunner

from cli.main import app
from flows.colorize import colorize_archive
from koala.hints import Hint, digest
from koala.outputs import read_provenance
from koala.sources import enumerate_inputs
from tasks.colorize_hints import read_hint_files
from tasks.colorize_plan import relative_name

SIZE = (320, 240)
DISC = (200, 110, 60)  #: centre x, y and radius of the object in every scene


def scene(seed: int) -> Image.Image:
    """A gray scan: a darker textured disc on a lighter noisy ground."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SIZE[1], : SIZE[0]]
    gray = np.full(SIZE[::-1], 190.0) + rng.normal(0, 3, SIZE[::-1]) - 20 * yy / SIZE[1]
    disc = (xx - DISC[0]) ** 2 + (yy - DISC[1]) ** 2 < DISC[2] ** 2
    gray[disc] = 90 + 8 * np.sin(xx[disc] / 7.0) + rng.normal(0, 3, disc.sum())
    return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L")


def disc_mask(margin: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[: SIZE[1], : SIZE[0]]
    return (xx - DISC[0]) ** 2 + (yy - DISC[1]) ** 2 < (DISC[2] + margin) ** 2


def lab_of(uri: str) -> np.ndarray:
    return rgb2lab(np.asarray(Image.open(uri).convert("RGB")))


def outputs(out: Path) -> dict[str, pd.Series]:
    index = pd.read_parquet(out / "index")
    return {
        Path(r.input_uri).stem + (f"+{r.hints_digest[:8]}" if r.hints else ""): r
        for r in index.itertuples()
    }


def test_hints_colour_their_scans_alone_and_an_edit_redoes_one(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    src, out = tmp_path / "box", tmp_path / "out"
    src.mkdir()
    for i in range(8):
        scene(i).save(src / f"scan{i}.png")
    first = colorize_archive(input=str(src), output=str(out), registry=registry)
    assert first["counts"] == {"ok": 8} and first["new"] == 8
    plain = outputs(out)

    navy = {"hints": [{"box": [185, 95, 215, 125], "colour": "navy"}]}
    (src / "scan2.hints.json").write_text(json.dumps(navy))
    (src / "scan5.hints.json").write_text(
        json.dumps({"hints": [{"x": 200, "y": 110, "colour": "#2e8b57"}]})
    )
    second = colorize_archive(input=str(src), output=str(out), registry=registry)
    assert second["new"] == 2 and second["counts"] == {"ok": 8}  # only the 2 hinted scans
    after = outputs(out)
    assert len(after) == 10  # the hint-less results of scans 2 and 5 are kept beside the new
    hinted = {k: r for k, r in after.items() if "+" in k}
    assert sorted(k.split("+")[0] for k in hinted) == ["scan2", "scan5"]
    for key, row in plain.items():
        assert after[key].output_uri == row.output_uri and Path(row.output_uri).exists()

    row = next(r for k, r in hinted.items() if k.startswith("scan2"))
    assert row.hints == 1 and "-hints" in row.output_uri
    lab, was = lab_of(row.output_uri), lab_of(plain["scan2"].output_uri)
    target = np.asarray(Hint((0, 0, 1, 1), (0, 0, 128), "navy").ab)
    inside = np.hypot(*(lab[disc_mask(-3)][:, 1:] - target).T)
    assert (inside < 10).mean() >= 0.9  # the hinted object is navy
    ground = ~disc_mask(8)
    assert np.hypot(*(lab[ground][:, 1:] - was[ground][:, 1:]).T).mean() < 3  # the rest as it was
    made = read_provenance(Path(row.output_uri).read_bytes())
    assert made["hintCount"] == "1" and json.loads(made["hints"]) == navy

    (src / "scan5.hints.json").write_text(
        json.dumps({"hints": [{"x": 200, "y": 110, "colour": "crimson"}]})
    )
    third = colorize_archive(input=str(src), output=str(out), registry=registry)
    assert third["new"] == 1  # the edited hints redo exactly that scan, as a new result
    final = outputs(out)
    assert len(final) == 11
    assert all(Path(r.output_uri).exists() for r in final.values())  # nothing overwritten
    again = colorize_archive(input=str(src), output=str(out), registry=registry)
    assert again["new"] == 0


def test_a_hints_folder_and_a_csv_find_their_scans(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "trams").mkdir(parents=True)
    for name in ("trams/t1.png", "flag.png"):
        scene(1).save(src / name)
    refs = enumerate_inputs([str(src)], str(tmp_path / "staging"))
    assert len(refs) == 2  # (no sidecar yet; a sidecar is never an input: see below)
    names = {r.key: relative_name(r) for r in refs}
    key = {relative_name(r): r.key for r in refs}

    folder = tmp_path / "hints"
    (folder / "trams").mkdir(parents=True)
    (folder / "trams" / "t1.hints.json").write_text(
        '{"hints": [{"x": 5, "y": 6, "colour": "red"}]}'
    )
    found = read_hint_files(refs, names, str(src), str(folder))
    assert list(found) == [key["trams/t1"]]
    assert found[key["trams/t1"]][1].endswith("trams/t1.hints.json")

    table = tmp_path / "hints.csv"
    table.write_text("image,x,y,left,top,right,bottom,colour\nflag.png,,,0,0,40,20,red\n")
    found = read_hint_files(refs, names, str(src), str(table))
    assert list(found) == [key["flag"]] and found[key["flag"]][0][0].box == (0, 0, 40, 20)
    assert digest(found[key["flag"]][0]) != digest(
        read_hint_files(refs, names, str(src), str(folder))[key["trams/t1"]][0]
    )

    (src / "flag.hints.json").write_text('{"hints": [{"x": 1, "y": 1, "colour": "gold"}]}')
    assert len(enumerate_inputs([str(src)], str(tmp_path / "staging"))) == 2
    assert list(read_hint_files(refs, names, str(src), None)) == [key["flag"]]


@pytest.mark.parametrize(
    ("sidecar", "says"),
    [
        (
            '{"hints": [{"x": 400, "y": 10, "colour": "red"}]}',
            "hint 1: point (400, 10) is outside the 320x240 image",
        ),
        (
            '{"hints": [{"x": 4, "y": 10, "colour": "navvy"}]}',
            "hint 1: unknown colour name 'navvy'",
        ),
        ("{oops", "not valid JSON"),
    ],
)
def test_a_bad_hint_is_one_line_before_any_work(
    tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch, sidecar: str, says: str
) -> None:
    def no_prefect(*_args, **_kwargs) -> None:
        raise AssertionError("Prefect started before the hints were checked")

    monkeypatch.setattr("cli.main._ready", no_prefect)
    src = tmp_path / "in"
    src.mkdir()
    scene(3).save(src / "a.png")
    (src / "a.hints.json").write_text(sidecar)
    args = [
        "colorize",
        "--input",
        str(src),
        "--output",
        str(tmp_path / "o"),
        "--registry",
        registry,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert str(src / "a.hints.json") in result.output and says in result.output
    assert result.output.count("\n") == 1, result.output
    assert not (tmp_path / "o" / "images").exists()


def test_a_hint_taking_model_reads_each_hint_where_it_lies_on_the_view() -> None:
    import io

    from koala.scans import read_scan
    from tasks.colorize import view_hint_maps

    buf = io.BytesIO()
    scene(1).save(buf, "PNG")
    scan = read_scan(buf.getvalue())
    box = (0, 25, 200, 175)  # a 320 x 240 scan in the 200 px view
    navy = Hint((185, 95, 215, 125), (0, 0, 128), "navy")
    maps = view_hint_maps([scan, scan], [[navy], []], [box, box], 200)
    where = maps[0, 2].nonzero()
    assert where[:, 0].min() == 25 + 59 and where[:, 1].min() == 115  # scan px x 200 / 320
    assert abs(float(maps[0, 1, 90, 120]) * 128 - navy.ab[1]) < 1e-3
    assert not maps[1].any()
