"""Decoding and validation of single images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from koala.images import (
    DEFAULT_LIMITS,
    ImageLimits,
    Rejected,
    check_colour,
    decode_image,
    encode_jpeg,
)
from tests.fixtures import (
    colour_photo,
    corrupt_jpeg,
    encode,
    gray,
    rgb_array,
    sepia,
    truncated_jpeg,
    yellowed,
)


def reason(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> str:
    with pytest.raises(Rejected) as err:
        decoded = decode_image(data, limits)
        check_colour(decoded.rgb, limits)
    return err.value.reason


def test_clean_jpeg_keeps_original_bytes() -> None:
    data = encode(colour_photo(1))
    decoded = decode_image(data)
    assert decoded.clean_jpeg and decoded.format == "JPEG"
    assert encode_jpeg(decoded, data) is data
    assert check_colour(decoded.rgb) > 0.01


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"<html><body>hello</body></html>", "not_an_image"),
        (b"%PDF-1.4 not an image at all" * 10, "not_an_image"),
        (truncated_jpeg(), "truncated"),
        (encode(colour_photo(2, (50, 200))), "too_small"),
        (encode(colour_photo(3), "GIF"), "unsupported_format"),
    ],
    ids=["empty", "html", "pdf", "truncated", "too-small", "gif"],
)
def test_bad_inputs_are_rejected_with_reason(data: bytes, expected: str) -> None:
    assert reason(data) == expected


def test_corrupt_jpeg_is_rejected() -> None:
    assert reason(corrupt_jpeg()) in {"corrupt", "truncated"}


def test_pixel_limit_guards_decompression_bombs() -> None:
    data = encode(colour_photo(4, (400, 300)), "PNG")
    assert reason(data, ImageLimits(max_pixels=100_000)) == "too_large"


@pytest.mark.parametrize("tone", [gray, sepia, yellowed], ids=["gray", "sepia", "yellowed"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_monochrome_detected_whatever_the_tint(tone, seed: int) -> None:
    assert reason(encode(tone(colour_photo(seed, (320, 240))), quality=80)) == "monochrome"


def test_gray_stored_as_rgb_is_monochrome() -> None:
    assert reason(encode(gray(colour_photo(5)).convert("RGB"), "PNG")) == "monochrome"


def test_small_coloured_mark_on_a_gray_print_is_monochrome() -> None:
    """One small solid orange mark (~0.25% of the picture: a sticker, a stamp) on a gray print
    does not make it a colour photograph: its colour does not follow the picture."""
    img = np.asarray(gray(colour_photo(6, (640, 480))).convert("RGB")).copy()
    img[200:224, 300:332] = (235, 120, 20)
    assert reason(encode(Image.fromarray(img), "PNG")) == "monochrome"


def test_exif_orientation_is_applied_and_reencoded() -> None:
    photo = colour_photo(7, (200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(photo, exif=exif, quality=95)
    decoded = decode_image(data)
    assert decoded.rgb.size == (100, 200) and not decoded.clean_jpeg
    stored = encode_jpeg(decoded, data)
    assert Image.open(io.BytesIO(stored)).size == (100, 200)
    expected = np.asarray(photo.transpose(Image.Transpose.ROTATE_270), dtype=float)
    assert np.abs(rgb_array(stored).astype(float) - expected).mean() < 4


def test_modes_convert_to_rgb_alpha_over_white() -> None:
    rgba = colour_photo(8).convert("RGBA")
    alpha = np.zeros((120, 160), np.uint8)
    alpha[:, 80:] = 255
    rgba.putalpha(Image.fromarray(alpha))
    out = np.asarray(decode_image(encode(rgba, "PNG")).rgb)
    assert (out[:, :80] == 255).all()
    cmyk = decode_image(encode(colour_photo(9).convert("CMYK"), "JPEG"))
    assert cmyk.rgb.mode == "RGB" and cmyk.mode == "CMYK" and not cmyk.clean_jpeg
    sixteen = Image.fromarray((np.arange(200 * 100).reshape(100, 200) % 65535).astype(np.uint16))
    assert decode_image(encode(sixteen, "PNG")).rgb.mode == "RGB"
    palette = decode_image(encode(colour_photo(10).convert("P"), "PNG"))
    assert palette.mode == "P" and palette.rgb.mode == "RGB"
