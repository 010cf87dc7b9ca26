"""The monochrome-or-colour decision on aged prints and faded colour photographs.

The defects here are drawn independently of the judge's training printers (bench/monochrome.py):
a stamp, an ink note, a colour bar, foxing and a water stain, cracks; faded colour photographs.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data
from skimage.color import lab2rgb, rgb2lab

from koala.images import DEFAULT_LIMITS, colour_evidence
from koala.scans import HasColour, judge_colour
from tests.fixtures import colour_photo, sepia

SIZE = (640, 480)


def _print(seed: int) -> Image.Image:
    return sepia(colour_photo(seed, SIZE)).convert("RGB")


def _stamp(img: Image.Image) -> Image.Image:
    draw = ImageDraw.Draw(img)
    draw.ellipse((420, 300, 560, 440), outline=(200, 40, 50), width=5)
    draw.text((445, 360), "ARCHIV 1931", fill=(200, 40, 50))
    return img


def _ink(img: Image.Image) -> Image.Image:
    draw = ImageDraw.Draw(img)
    for row in range(3):
        xs = np.arange(60, 330, 2.0)
        ys = 40 + 26 * row + 6 * np.sin(xs / 4.0 + row)
        draw.line(list(zip(xs, ys, strict=True)), fill=(40, 55, 150), width=2)
    return img


def _colour_bar(img: Image.Image) -> Image.Image:
    draw = ImageDraw.Draw(img)
    colours = ["#c01818", "#f08c18", "#f0e618", "#189a30", "#18b0cc", "#1830b0", "#c018a0"]
    for i, c in enumerate(colours):
        draw.rectangle((i * 60, 450, i * 60 + 59, 479), fill=c)
    return img


def _foxed_and_stained(img: Image.Image) -> Image.Image:
    rng = np.random.default_rng(5)
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x, y, r = rng.uniform(0, 640), rng.uniform(0, 480), rng.uniform(1, 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(150, 90, 45))
    draw.ellipse((80, 250, 230, 380), outline=(140, 100, 60), width=3)  # tide line
    return img


def _cracked(img: Image.Image) -> Image.Image:
    rng = np.random.default_rng(6)
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        pts = np.cumsum(rng.normal(0, 12, (25, 2)), 0) + rng.uniform(0, 480, 2)
        draw.line([tuple(p) for p in pts], fill=(250, 246, 230), width=2)
    return img


def _faded(img: Image.Image, keep: float, cast: tuple[float, float]) -> Image.Image:
    lab = rgb2lab(np.asarray(img))
    lab[..., 1:] = lab[..., 1:] * keep + np.array(cast)
    lab[..., 0] = 8 + lab[..., 0] * 0.85
    return Image.fromarray((np.clip(lab2rgb(lab), 0, 1) * 255).astype(np.uint8))


@pytest.mark.parametrize("aged", [_stamp, _ink, _colour_bar, _foxed_and_stained, _cracked])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aged_monochrome_print_is_monochrome(aged, seed: int) -> None:
    evidence = colour_evidence(aged(_print(seed)))
    assert not evidence.is_colour, evidence.detail


@pytest.mark.parametrize(
    ("keep", "cast"),
    [(1.0, (0, 0)), (0.5, (4, 10)), (0.35, (2, 6))],
    ids=["original", "1970s-fade", "autochrome-like"],
)
@pytest.mark.parametrize("seed", [0, 1, 2, 4, 5, 6])  # not the rocket (seed % 4 == 3): see below
def test_colour_photograph_is_colour_even_faded(keep: float, cast, seed: int) -> None:
    evidence = colour_evidence(_faded(colour_photo(seed, SIZE), keep, cast))
    assert evidence.is_colour, evidence.detail


@pytest.mark.xfail(
    strict=True,
    reason="known miss: a blue twilight sky over white towers with a "
    "few orange lights reads as a cyanotype print with foxing",
)
def test_twilight_rocket_launch_is_colour() -> None:
    rocket = Image.fromarray(data.rocket()).resize(SIZE, Image.Resampling.BILINEAR)  # 640 px
    assert colour_evidence(rocket).is_colour


def test_score_orders_colour_above_monochrome() -> None:
    colour = colour_evidence(colour_photo(1, SIZE)).score
    stamped = colour_evidence(_stamp(_print(1))).score
    assert 0 <= stamped < 0.5 < colour <= 1


def test_treat_as_overrides_the_judge() -> None:
    stamped = _stamp(_print(2))
    assert judge_colour(stamped, "auto", DEFAULT_LIMITS, "RGB").is_colour is False
    with pytest.raises(HasColour):
        judge_colour(stamped, "colour", DEFAULT_LIMITS, "RGB")
    photo = colour_photo(2, SIZE)
    with pytest.raises(HasColour):
        judge_colour(photo, "auto", DEFAULT_LIMITS, "RGB")
    assert judge_colour(photo, "monochrome", DEFAULT_LIMITS, "RGB").is_colour is True


def test_small_pictures_use_the_single_tint_rule() -> None:
    """Under the judge's view size the single-tint rule decides, as the detail says."""
    small = colour_evidence(colour_photo(3, (320, 240)))  # the rocket, small: colour
    assert small.is_colour and small.detail.startswith("small picture")
    assert not colour_evidence(sepia(colour_photo(8)).convert("RGB")).is_colour


@pytest.mark.parametrize("judge", [0, 1], ids=["first", "second"])
def test_the_shipped_graphs_are_the_trained_judges(judge: int) -> None:
    """Inference runs each judge's ONNX graph: it was made from the shipped safetensors (its
    digest) and gives the trained judge's probabilities."""
    import torch

    from koala.colour_judge import JUDGES, load_judge, weights_digest
    from koala.judge_runtime import graph_metadata, monochrome_probability
    from koala.monochrome import judge_view, measure

    weights, graph = JUDGES[judge]
    assert graph_metadata(str(graph))["weights_sha256"] == weights_digest(weights)
    pictures = [_print(1), _stamp(_print(2)), colour_photo(3, SIZE).convert("RGB")]
    views = np.stack([judge_view(measure(p)) for p in pictures])
    with torch.inference_mode():
        reference = torch.sigmoid(load_judge(str(weights))(torch.from_numpy(views))).numpy()
    np.testing.assert_allclose(monochrome_probability(views, graph), reference, atol=1e-5)


def test_second_opinion_near_the_cut() -> None:
    """In the second-opinion band both judges decide, each on the view's symmetries; outside
    it the first judge alone (the same picture, the band moved over all or none of it)."""
    from koala.images import ImageLimits
    from koala.judge_runtime import monochrome_probability, second_opinion, symmetries
    from koala.monochrome import judge_view, measure

    stamped = _stamp(_print(4))
    view = judge_view(measure(stamped))
    alone = colour_evidence(stamped, ImageLimits(second_opinion_band=(1.0, 1.0)))
    both = colour_evidence(stamped, ImageLimits(second_opinion_band=(0.0, 1.0)))
    assert (alone.stage, both.stage) == ("judge", "second opinion")
    assert alone.detail.startswith("colour judge:") and both.detail.startswith("colour judges:")
    assert alone.score == pytest.approx(1.0 - monochrome_probability(view[None])[0], abs=1e-4)
    assert both.score == pytest.approx(1.0 - second_opinion(view), abs=1e-4)
    assert len({v.tobytes() for v in symmetries(view)}) == 4  # four different views
