"""A hint's colour spreads over its region of the view and stops at the picture's edges."""

from __future__ import annotations

import numpy as np

from koala.hint_spread import spread_hints
from koala.hints import Hint

S = 200
BOX = (0, 20, 200, 180)  #: a 1000 x 800 scan in the padded 200 px view
SCAN = (1000, 800)


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured dark disc on a lighter noisy ground, and a model's dull prediction."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:S, :S]
    light = np.full((S, S), 70.0) + rng.normal(0, 1.5, (S, S))
    disc = (xx - 120) ** 2 + (yy - 90) ** 2 < 45**2
    light[disc] = 40 + 5 * np.sin(xx[disc] / 6.0) + rng.normal(0, 1.5, disc.sum())
    ab = np.zeros((2, S, S), np.float32)
    ab[:, ~disc] = np.array([5.0, 15.0])[:, None]
    ab[:, disc] = np.array([10.0, 20.0])[:, None]
    inside = np.zeros((S, S), bool)
    inside[BOX[1] : BOX[3], BOX[0] : BOX[2]] = True
    return light.astype(np.float32), ab, disc & inside


def test_a_box_hint_colours_its_object_and_leaves_the_ground_alone() -> None:
    light, ab, disc = scene()
    ground = ~disc
    ground[: BOX[1]] = ground[BOX[3] :] = False
    navy = Hint((550, 300, 650, 400), (0, 0, 128), "navy")  # inside the disc, in scan pixels
    for hint in (navy, Hint((600, 350, 601, 351), (0, 0, 128), "navy", point=True)):
        out = spread_hints(light, ab, BOX, [hint], SCAN)
        off = np.hypot(*(out[:, disc] - np.asarray(hint.ab)[:, None]))
        assert (off < 10).mean() >= 0.9  # the object takes the hint's colour
        assert np.hypot(*(out[:, ground] - ab[:, ground])).mean() < 3  # the ground keeps its own
        assert np.array_equal(out[:, : BOX[1]], ab[:, : BOX[1]])  # the pad is untouched
    assert spread_hints(light, ab, BOX, [], SCAN) is ab


def test_later_hints_win_and_two_regions_take_their_own_colours() -> None:
    light, ab, disc = scene()
    red, green = (
        Hint((0, 0, 100, 100), rgb, n) for rgb, n in (((200, 0, 0), "r"), ((0, 150, 0), "g"))
    )
    inside = Hint((600, 350, 601, 351), (0, 0, 128), "navy", point=True)
    out = spread_hints(light, ab, BOX, [red, green, inside], SCAN)
    corner = out[:, BOX[1] + 2, 2]
    assert np.hypot(*(corner - np.asarray(green.ab))) < 10  # green was pinned over red
    off = np.hypot(*(out[:, disc] - np.asarray(inside.ab)[:, None]))
    assert (off < 10).mean() >= 0.9
