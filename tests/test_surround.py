"""The picture apart from its surround, and the cascade's clear cases and uncertainty.

Prints are drawn here independently of the calibration set's printers (bench/scan_printers.py):
paper margins, rounded corners, a black or white scanner bed, a colour target beside the print,
a note on the margin.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from skimage.color import lab2rgb

from koala.choices import ImageLimits
from koala.images import colour_evidence
from koala.monochrome import measure, thumbnail_lab
from koala.surround import picture_mask
from tests.fixtures import colour_photo, sepia

PRINT = (560, 420)
BEDS = {"white bed": (250, 250, 248), "black bed": (12, 12, 14)}


def _in_surround(picture: Image.Image, bed: tuple, target: bool = False, note: bool = False):
    """``picture`` on cream paper with a margin and rounded corners, on a scanner bed; the
    print's box on the scan is returned too."""
    paper = ImageOps.expand(picture, border=(30, 30, 30, 70), fill=(242, 232, 206))
    corners = Image.new("L", paper.size, 0)
    ImageDraw.Draw(corners).rounded_rectangle([0, 0, *paper.size], radius=28, fill=255)
    scan = Image.new("RGB", (paper.width + 160, paper.height + 120), bed)
    scan.paste(paper, (40, 40), corners)
    draw = ImageDraw.Draw(scan)
    if note:  # a line of blue ink on the bottom margin
        xs = np.arange(120, 420, 2.0)
        draw.line(list(zip(xs, 40 + 30 + 420 + 30 + 6 * np.sin(xs / 5), strict=True)),
                  fill=(40, 55, 150), width=2)  # fmt: skip
    if target:  # a colour target on the bed beside the print
        colours = ["#c01818", "#f08c18", "#f0e618", "#189a30", "#18b0cc", "#1830b0", "#c018a0"]
        for i, c in enumerate(colours):
            draw.rectangle((paper.width + 70, 60 + i * 50, paper.width + 130, 108 + i * 50), fill=c)
    return scan, (70, 70, 70 + picture.width, 70 + picture.height)


def test_the_print_is_found_apart_from_margin_bed_and_target() -> None:
    scan, (x0, y0, x1, y1) = _in_surround(sepia(colour_photo(1, PRINT)), BEDS["black bed"], True)
    lab = thumbnail_lab(scan)
    mask = picture_mask(lab)
    k = lab.shape[1] / scan.width
    ys, xs = np.nonzero(mask)  # the print's box is found, to a thumbnail pixel or two ...
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / k
    assert np.abs(found - np.array([x0, y0, x1, y1])).max() < 3 / k
    inside = mask[int(y0 * k) + 2 : int(y1 * k) - 2, int(x0 * k) + 2 : int(x1 * k) - 2]
    assert inside.mean() > 0.9  # ... and most of it (pale parts touching the margin may go)
    target = mask[:, int((scan.width - 85) * k) : int((scan.width - 35) * k)]
    assert not target.any()  # the colour target beside it is surround


def test_a_photograph_that_fills_the_frame_is_all_picture() -> None:
    assert picture_mask(thumbnail_lab(colour_photo(2, PRINT))).mean() > 0.95


@pytest.mark.parametrize("bed", list(BEDS), ids=list(BEDS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_toned_print_in_its_surround_is_monochrome(bed: str, seed: int) -> None:
    scan, _ = _in_surround(sepia(colour_photo(seed, PRINT)), BEDS[bed], seed == 1, seed == 2)
    evidence = colour_evidence(scan)
    assert not evidence.is_colour, evidence.detail


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_colour_photograph_in_its_surround_is_colour(seed: int) -> None:
    scan, _ = _in_surround(colour_photo(seed, PRINT), BEDS["white bed"])
    evidence = colour_evidence(scan)
    assert evidence.is_colour, evidence.detail


def test_clear_cases_are_settled_before_the_judge() -> None:
    gray = colour_evidence(colour_photo(4, PRINT).convert("L").convert("RGB"))
    assert (gray.stage, gray.is_colour) == ("one tint", False)
    light, hue = np.mgrid[35:80:420j, 0 : 2 * np.pi : 560j]  # every hue at every lightness
    lab = np.stack([light, 40 * np.cos(hue), 40 * np.sin(hue)], -1)
    wheel = (np.clip(lab2rgb(lab), 0, 1) * 255).astype(np.uint8)
    vivid = colour_evidence(Image.fromarray(wheel))
    assert (vivid.stage, vivid.is_colour, vivid.uncertain) == ("many hues", True, False)


def test_the_judges_doubt_is_said_out_loud() -> None:
    doubtful = ImageLimits(uncertain_band=(0.0, 1.0))  # every judged picture is doubtful
    stamped = sepia(colour_photo(5, PRINT)).convert("RGB")
    ImageDraw.Draw(stamped).ellipse((380, 260, 520, 400), outline=(200, 40, 50), width=5)
    evidence = colour_evidence(stamped, doubtful)
    assert evidence.stage == "judge" and evidence.uncertain
    assert "uncertain" in evidence.detail
    sure = colour_evidence(stamped, ImageLimits(uncertain_band=(1.0, 1.0)))
    assert not sure.uncertain and sure.score == evidence.score  # the band only labels


def test_measures_keep_the_surround_out_of_the_tint() -> None:
    scan, _ = _in_surround(sepia(colour_photo(3, PRINT)), BEDS["white bed"])
    m = measure(scan)
    assert float(np.percentile(m.distance[m.picture], 99)) < 6.0
