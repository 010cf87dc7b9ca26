"""Inputs whose colour decision the judge was unsure of: flagged in the index and shown first
in the contact sheet, with thumbnails, through a real colorize batch."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import ImageDraw

from koala.choices import ImageLimits
from models.config import FLAGSHIP
from tasks.archive_index import compact_index, read_index
from tasks.colorize import ColorizeConfig, colorize_batch, plan_batches, prepare_run
from tasks.contact_sheet import write_contact_sheet
from tests.fixtures import colour_photo, encode, sepia
from tests.test_colour_decision import _faded

SIZE = (640, 480)


def _collection(folder: Path) -> None:
    folder.mkdir()
    stamped = sepia(colour_photo(1, SIZE)).convert("RGB")
    ImageDraw.Draw(stamped).ellipse((420, 300, 560, 440), outline=(200, 40, 50), width=5)
    (folder / "stamped_print.jpg").write_bytes(encode(stamped))
    (folder / "faded_photo.jpg").write_bytes(encode(_faded(colour_photo(2, SIZE), 0.4, (3, 8))))
    (folder / "gray_scan.png").write_bytes(encode(colour_photo(4, SIZE).convert("L"), "PNG"))


def test_doubtful_decisions_are_flagged_and_shown_first(tmp_path: Path, registry: str) -> None:
    _collection(tmp_path / "in")
    out = tmp_path / "out"
    doubtful = ImageLimits(uncertain_band=(0.0, 1.0))  # every picture the CNN judges
    cfg = ColorizeConfig(registry, FLAGSHIP, str(out), "png", limits=doubtful)
    refs, plan, card, index = prepare_run(str(tmp_path / "in"), cfg)
    colorize_batch([r for b in plan_batches(refs, plan, index, card, cfg) for r in b], plan, cfg)
    compact_index(str(out))
    index = read_index(str(out))
    rows = {Path(u).name: r for u, r in zip(index["input_uri"], index.itertuples(), strict=True)}
    assert rows["stamped_print.jpg"].status == "ok"
    assert rows["faded_photo.jpg"].status == "skipped_color"
    assert rows["stamped_print.jpg"].colour_uncertain == True  # noqa: E712 (a numpy bool)
    assert rows["faded_photo.jpg"].colour_uncertain == True  # noqa: E712
    gray = rows["gray_scan.png"]  # a gray file: no colour channels, so nothing to doubt
    assert gray.colour_uncertain == False and gray.colour_score == 0.0  # noqa: E712

    sheet = Path(write_contact_sheet(str(out), index, FLAGSHIP)).read_text()
    first = sheet.index("id='check-colour'")
    assert first < sheet.index("id='samples'")
    section = sheet[first : sheet.index("<h2", first + 1)]
    assert "stamped_print.jpg" in section and "faded_photo.jpg" in section
    assert "gray_scan.png" not in section
    shown = re.findall(r"<img src='([^']+)'", section)
    assert len(shown) >= 3 and all((out / src).is_file() for src in shown)


def test_sure_decisions_are_not_flagged(tmp_path: Path, registry: str) -> None:
    _collection(tmp_path / "in")
    out = tmp_path / "out"
    sure = ImageLimits(uncertain_band=(1.0, 1.0))
    cfg = ColorizeConfig(registry, FLAGSHIP, str(out), "png", limits=sure)
    refs, plan, card, index = prepare_run(str(tmp_path / "in"), cfg)
    colorize_batch([r for b in plan_batches(refs, plan, index, card, cfg) for r in b], plan, cfg)
    index = read_index(str(out))
    assert not index["colour_uncertain"].fillna(False).any()
    assert "check-colour" not in Path(write_contact_sheet(str(out), index, FLAGSHIP)).read_text()
