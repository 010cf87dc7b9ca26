"""Resize-and-pad geometry, CIE Lab against scikit-image, compact Lab storage, colourfulness."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from koala.colour import (
    colourfulness,
    decode_lab,
    encode_lab,
    fit_box,
    lab_to_rgb,
    padded_view_lab,
    resize_and_pad,
    rgb_to_lab,
)
from tests.fixtures import colour_photo


@pytest.mark.parametrize(
    ("size_in", "box"),
    [
        ((400, 100), (0, 75, 200, 125)),  # wide: full width, centred vertically
        ((100, 400), (75, 0, 125, 200)),  # tall: full height, centred horizontally
        ((50, 50), (0, 0, 200, 200)),  # small square: stretched up to fill
        ((481, 321), (0, 33, 200, 166)),
    ],
    ids=["wide", "tall", "square", "bsds"],
)
def test_pad_geometry(size_in: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    img = colour_photo(1, size_in)
    arr, got = resize_and_pad(img, 200)
    assert got == box == fit_box(*size_in, 200)
    assert arr.shape == (200, 200, 3) and arr.dtype == np.uint8
    x0, y0, x1, y1 = got
    pad = np.ones((200, 200), bool)
    pad[y0:y1, x0:x1] = False
    assert (arr[pad] == 255).all()  # white padding, nothing else
    assert (arr[y0:y1, x0:x1] != 255).any()
    w, h = x1 - x0, y1 - y0
    assert abs(w / h - size_in[0] / size_in[1]) < 0.02  # aspect kept


def test_lab_agrees_with_scikit_image() -> None:
    rng = np.random.default_rng(0)
    rgb = np.concatenate(
        [
            np.asarray(colour_photo(2, (64, 64))).reshape(-1, 3),
            rng.integers(0, 256, (4096, 3)),
            [[0, 0, 0], [255, 255, 255]],
        ]
    )
    rgb = rgb.astype(np.uint8).reshape(-1, 1, 3)
    ours, ref = rgb_to_lab(rgb), rgb2lab(rgb)
    assert np.abs(ours - ref).max() < 1e-3
    assert ours[..., 0].min() >= 0 and ours[..., 0].max() <= 100 + 1e-4
    assert np.abs(ours[..., 1:]).max() < 128


def test_compact_lab_round_trip_is_invisible() -> None:
    rgb, _ = resize_and_pad(colour_photo(3, (300, 200)), 200)
    light, ab = encode_lab(rgb_to_lab(rgb))
    assert light.dtype == np.uint8 and ab.dtype == np.int8 and ab.shape == (2, 200, 200)
    back = lab_to_rgb(decode_lab(light, ab)).astype(int)
    assert np.abs(back - rgb.astype(int)).mean() < 1.0
    assert np.abs(back - rgb.astype(int)).max() <= 4


def test_colourfulness_matches_hand_computation() -> None:
    assert colourfulness(np.full((8, 8, 3), 128, np.uint8)) == 0.0
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, :] = (255, 0, 0)  # rg = 255, yb = 127.5
    img[1, :] = (0, 0, 255)  # rg = 0, yb = -255
    rg, yb = np.array([255.0, 0.0]), np.array([127.5, -255.0])
    expected = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    assert colourfulness(img) == pytest.approx(expected)
    assert colourfulness(np.asarray(colour_photo(4))) > colourfulness(
        np.asarray(colour_photo(4).convert("L").convert("RGB"))
    )


def test_resize_does_not_touch_the_input() -> None:
    img = Image.new("RGB", (10, 20), (1, 2, 3))
    resize_and_pad(img, 200)
    assert img.size == (10, 20)


def test_padded_view_lab_equals_converting_the_whole_square() -> None:
    from koala.colour import padded_view_lab

    view, box = resize_and_pad(colour_photo(5, (300, 120)), 200)
    fast, full = padded_view_lab(view, box), rgb_to_lab(view)
    assert np.abs(fast - full).max() < 5e-3
    light_fast, ab_fast = encode_lab(fast)
    light_full, ab_full = encode_lab(full)
    assert np.array_equal(light_fast, light_full) and np.array_equal(ab_fast, ab_full)


def test_gray_working_views_equal_the_rgb_path() -> None:
    from skimage import data

    from koala.colour import model_views, working_views

    img = Image.fromarray(data.camera()).resize((333, 250))
    fast, full = working_views(img), model_views(img.convert("RGB"))
    assert fast["box200"] == full["box200"]
    np.testing.assert_array_equal(fast["l"], full["l"])
    np.testing.assert_allclose(fast["gray299"], full["gray299"], atol=1e-5)


def test_colorize_lightness_matches_the_reference_merge() -> None:
    from skimage import data

    from koala.colour import colorize_lightness, merge_full_resolution

    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((401, 300)))
    lab = rgb_to_lab(rgb)
    view, box = resize_and_pad(Image.fromarray(rgb), 200)
    ab = padded_view_lab(view, box)[..., 1:].transpose(2, 0, 1)
    fast = colorize_lightness(lab[..., 0], ab, box, strip_rows=64).astype(int)
    reference = lab_to_rgb(merge_full_resolution(lab, ab, box)).astype(int)
    assert fast.shape == reference.shape and np.abs(fast - reference).mean() < 0.5
    assert np.percentile(np.abs(fast - reference), 99.5) <= 2
    deep = colorize_lightness(lab[..., 0], ab, box, np.uint16)
    assert deep.dtype == np.uint16 and np.abs(deep / 257.0 - fast).max() <= 1.0


def test_colorize_lightness_strips_do_not_change_the_result() -> None:
    from koala.colour import colorize_lightness

    rng = np.random.default_rng(0)
    light = (rng.random((300, 401)) * 100).astype(np.float32)
    ab = (rng.random((2, 200, 200)) * 60 - 30).astype(np.float32)
    view_l = (rng.random((200, 200)) * 100).astype(np.float32)
    box = (0, 50, 200, 150)
    whole = colorize_lightness(light, ab, box, strip_rows=300, light_view=view_l)
    for rows in (1, 7, 64, 512):
        strips = colorize_lightness(light, ab, box, strip_rows=rows, light_view=view_l)
        np.testing.assert_array_equal(strips, whole)
