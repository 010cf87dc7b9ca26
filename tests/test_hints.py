"""Colour hints as data: the interchange JSON and the CSV, every mistake one line naming the
file and the hint, and a digest that changes only when the hints' effect does."""

from __future__ import annotations

import json

import pytest

from koala import hints
from koala.hints import HintError


def sidecar(*items: dict) -> bytes:
    return json.dumps({"hints": list(items), "editor": "someone"}).encode()


def test_the_interchange_form_reads_points_and_boxes_in_hex_and_css_names() -> None:
    got = hints.parse_sidecar(
        sidecar(
            {"x": 120, "y": 80, "colour": "#3a5f2b", "note": "the tram"},
            {"box": [10, 10, 60, 40], "colour": "Navy"},
            {"x": 3, "y": 4, "colour": "#f00"},
        ),
        "tram.hints.json",
    )
    assert [h.box for h in got] == [(120, 80, 121, 81), (10, 10, 60, 40), (3, 4, 4, 5)]
    assert [h.rgb for h in got] == [(0x3A, 0x5F, 0x2B), (0, 0, 128), (255, 0, 0)]
    assert [h.point for h in got] == [True, False, True]
    a, b = got[1].ab  # navy: blue, so b* strongly negative
    assert b < -50 and a > 0
    again = hints.parse_sidecar(hints.to_json(got), "again.json")
    assert again == got  # what the review page writes reads back the same


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"x": 1, "y": 1, "colour": "navvy"}, "hint 2: unknown colour name 'navvy'"),
        ({"x": 1, "y": 1, "colour": "#12345"}, "hint 2: colour '#12345' is not #rgb or #rrggbb"),
        ({"x": 1, "y": 1, "colour": "#ggg"}, "hint 2: colour '#ggg' is not a valid hex colour"),
        ({"x": 1, "y": 1}, "hint 2: colour must be a hex string or a colour name, not None"),
        ({"x": 1.5, "y": 1, "colour": "red"}, "hint 2: x must be a whole number of pixels"),
        ({"box": [5, 5, 5, 9], "colour": "red"}, "hint 2: box [5, 5, 5, 9] is empty"),
        ({"box": [5, 5, 9], "colour": "red"}, "hint 2: box must be [left, top, right, bottom]"),
        ({"y": 4, "colour": "red"}, "hint 2: a hint needs x and y, or box"),
        ("red", "hint 2: a hint must be an object"),
    ],
)
def test_a_bad_hint_is_one_line_naming_the_file_and_the_hint(item: object, says: str) -> None:
    with pytest.raises(HintError) as err:
        hints.parse_sidecar(sidecar({"x": 1, "y": 1, "colour": "red"}, item), "a/b.hints.json")
    message = str(err.value)
    assert message.startswith("a/b.hints.json: ") and says in message and "\n" not in message


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"points": []}', 'expected an object with a "hints" list'),
    ],
)
def test_a_malformed_file_is_one_line(data: bytes, says: str) -> None:
    with pytest.raises(HintError) as err:
        hints.parse_sidecar(data, "x.hints.json")
    assert str(err.value).startswith(f"x.hints.json: {says}")


def test_hints_off_the_scan_are_refused() -> None:
    ok = hints.parse_sidecar(sidecar({"x": 99, "y": 49, "colour": "red"}), "s.hints.json")
    hints.check_on_scan(ok, 100, 50, "s.hints.json")
    for item, what in (
        ({"x": 100, "y": 10, "colour": "red"}, "point (100, 10)"),
        ({"box": [-1, 0, 10, 10], "colour": "red"}, "box [-1, 0, 10, 10]"),
        ({"box": [90, 40, 101, 50], "colour": "red"}, "box [90, 40, 101, 50]"),
    ):
        bad = hints.parse_sidecar(sidecar({"x": 1, "y": 1, "colour": "red"}, item), "s.json")
        with pytest.raises(HintError) as err:
            hints.check_on_scan(bad, 100, 50, "s.json")
        assert str(err.value) == f"s.json: hint 2: {what} is outside the 100x50 image"


def test_the_collection_csv_groups_hints_by_scan() -> None:
    data = (
        b"image,x,y,left,top,right,bottom,colour\n"
        b"trams/t1.tif,12,30,,,,,#3a5f2b\n"
        b"trams/t1.tif,,,0,0,20,10,navy\n"
        b"./flags/f.jpg,5,5,,,,,red\n"
    )
    got = hints.parse_csv(data, "hints.csv")
    assert sorted(got) == ["flags/f.jpg", "trams/t1.tif"]
    assert [h.box for h in got["trams/t1.tif"]] == [(12, 30, 13, 31), (0, 0, 20, 10)]
    bad = b"image,x,y,colour\nt1.tif,1,2,\xc3\xa9cru\n"
    for data, says in (
        (bad, "unknown colour name 'écru'"),
        (b"image,x,y,colour\nt1.tif,ten,2,red\n", "x must be a number, not 'ten'"),
    ):
        with pytest.raises(HintError) as err:
            hints.parse_csv(data, "hints.csv")
        assert str(err.value) == f"hints.csv: line 2: {says}"


def test_the_digest_follows_what_the_hints_do() -> None:
    one = hints.parse_sidecar(
        sidecar({"x": 1, "y": 2, "colour": "red"}, {"box": [0, 0, 4, 4], "colour": "navy"}), "a"
    )
    same = hints.parse_sidecar(
        sidecar({"box": [0, 0, 4, 4], "colour": "#000080"}, {"x": 1, "y": 2, "colour": "#f00"}), "b"
    )
    moved = hints.parse_sidecar(
        sidecar({"x": 1, "y": 3, "colour": "red"}, {"box": [0, 0, 4, 4], "colour": "navy"}), "c"
    )
    assert hints.digest(one) == hints.digest(same) != hints.digest(moved)
    assert hints.sidecar_name("trams/t1.tif") == "trams/t1.hints.json"
