"""Monochrome or colour: the cascade that decides whether a picture is a colour photograph.

One decision serves two jobs: ``colorize-archive`` colorizes a monochrome scan and leaves a
colour photograph alone; ``build-dataset`` keeps only colour photographs for training.

1. A small thumbnail (long side :data:`THUMB_SIDE`, box-filtered) in CIE Lab (OpenCV).
2. The picture apart from its surround (``koala.surround.picture_mask``): margins, mounts,
   scanner bed, torn or rounded edges and things beside the print are no evidence.
3. The tint of each lightness (median a*b* of the picture's pixels in 40 L* bins) and each
   pixel's departure from it. A monochrome print, toned or not, has one tint per lightness.
4. Clear cases end here: within a just-noticeable difference of one tint everywhere
   (``one tint``); or strong colour off the tint in several distinct hues over much of the
   picture (``many hues``).
5. The ambiguous rest goes to the colour judge, a small CNN (``koala.colour_judge``,
   run by ONNX Runtime: ``koala.judge_runtime``) that
   looks at where the off-tint colour is and whether it follows the picture (stains, foxing,
   stamps, ink, colour bars and cracks do not; faded or hand-tinted colour does). Near its
   cut a second judge, trained on other pictures, looks too, and both look at the view's
   symmetries: their mean decides. A probability near the cut is said out loud: ``uncertain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
from PIL import Image

from koala.choices import DEFAULT_LIMITS, JUDGE_SIDE, ImageLimits
from koala.surround import picture_mask

THUMB_SIDE = 128  #: long side of the thumbnail every measure is taken on
LIGHT_BINS = 40  #: lightness bins of the tint (2.5 L* units each)
TINT_STEP = 0.5  #: a*b* resolution of the tint's median (Lab units)
#: a pixel departs from the tint when farther than this (Lab units)
OFF_TINT = 6.0
#: "many hues": hue families (of 12, 30 degrees each) that each hold at least HUE_SHARE of the
#: picture in off-tint colour of chroma at least HUE_CHROMA
HUE_FAMILIES = 3
HUE_SHARE = 0.03
HUE_CHROMA = 12.0
#: and the off-tint colour covers at least this share of the picture
MANY_HUES_AREA = 0.3


@dataclass(frozen=True)
class ColourEvidence:
    """The monochrome-or-colour decision about one picture and the evidence behind it."""

    #: how much colour the picture carries (higher is more colour; sortable in the index)
    score: float
    is_colour: bool
    #: one line an archivist can read, e.g. "one tint: 99% of pixels within 1.2 of it"
    detail: str
    #: the judge was unsure: the decision is its best guess, a person should look
    uncertain: bool = False
    #: which step decided: "one tint", "many hues", "judge", "second opinion" (both judges)
    #: or "small picture"
    stage: str = ""


@dataclass
class Measures:
    """What the cascade measures on one picture's thumbnail."""

    lab: np.ndarray  #: (H, W, 3) float32 CIE Lab
    picture: np.ndarray  #: (H, W) bool, the photograph apart from its surround
    residual: np.ndarray  #: (H, W, 2) a*b* minus the tint of each pixel's lightness

    @cached_property
    def distance(self) -> np.ndarray:
        """(H, W) each pixel's departure from the tint (Lab units), measured once."""
        return cv2.magnitude(self.residual[..., 0], self.residual[..., 1])


def thumbnail_lab(rgb: Image.Image, side: int = THUMB_SIDE) -> np.ndarray:
    """CIE Lab (float32, L* 0-100) of ``rgb`` box-filtered to ``side`` on its long side."""
    factor = max(1, max(rgb.size) // side)
    thumb = rgb.reduce(factor) if factor > 1 else rgb
    if max(thumb.size) > side:
        thumb = thumb.resize(
            _fit(thumb.size, side), Image.Resampling.BOX
        )  # the last step of the box filter
    arr = np.asarray(thumb.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return cv2.cvtColor(arr, cv2.COLOR_RGB2Lab)


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    k = side / max(size)
    return max(1, round(size[0] * k)), max(1, round(size[1] * k))


_QUARTERS = np.arange(401) / 4.0  #: L* from 0 to 100 in steps of 0.25


def tint_residual(lab: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """a*b* of each pixel minus the tint of its lightness (H, W, 2): the tint is the median a*b*
    of the pixels (of ``where``, default all) in each of :data:`LIGHT_BINS` lightness bins
    (from a histogram at :data:`TINT_STEP` units), interpolated at each pixel's L*. In a
    monochrome print (sepia, selenium, cyanotype, yellowed) colour is a function of lightness,
    so the residual is what the tone does not explain."""
    light, a, b = (np.ascontiguousarray(lab[..., k]).ravel() for k in range(3))
    keep = slice(None) if where is None else where.ravel()
    lbin = np.minimum((light[keep] * (LIGHT_BINS / 100.0)).astype(np.int32), LIGHT_BINS - 1)
    counts = np.bincount(lbin, minlength=LIGHT_BINS)
    present = counts > 0
    centre = np.bincount(lbin, light[keep], LIGHT_BINS)[present] / counts[present]
    width = int(256 / TINT_STEP)
    half = ((counts + 1) // 2)[:, None]
    at = np.minimum((light * 4.0).astype(np.int32), 400)  # each pixel's L* to 0.25
    res = np.empty((light.size, 2), np.float32)
    for k, chan in enumerate((a, b)):
        level = np.clip(((chan[keep] + 128.0) * (1 / TINT_STEP)).astype(np.int32), 0, width - 1)
        low = int(level.min())  # the histogram spans only the levels present
        span = int(level.max()) - low + 1
        hist = np.bincount(lbin * span + (level - low), minlength=LIGHT_BINS * span)
        rank = np.cumsum(hist.reshape(LIGHT_BINS, span), axis=1) >= half
        tint = (np.argmax(rank, axis=1)[present] + low + 0.5) * TINT_STEP - 128.0
        table = np.interp(_QUARTERS, centre, tint).astype(np.float32)
        np.subtract(chan, table[at], out=res[:, k])
    return res.reshape(*lab.shape[:2], 2)


def measure(rgb: Image.Image) -> Measures:
    """The thumbnail, the picture apart from its surround, and the departure from one tint."""
    lab = thumbnail_lab(rgb)
    picture = picture_mask(lab)
    return Measures(lab, picture, tint_residual(lab, picture))


def one_tint_spread(m: Measures) -> float:
    """How far (Lab units) the 99th-percentile picture pixel departs from one tint."""
    inside = m.distance[m.picture]
    at = 0.99 * (inside.size - 1)  # NumPy's linear percentile, by partition instead of a sort
    lo = int(at)
    hi = min(lo + 1, inside.size - 1)
    low, high = np.partition(inside, (lo, hi))[[lo, hi]].astype(np.float64)
    return float(low + (high - low) * (at - lo))


def off_tint_share(m: Measures) -> float:
    """Share of the picture's mid-tone pixels farther than :data:`OFF_TINT` from the tint, after
    a 3x3 opening (thin JPEG fringes along edges do not count)."""
    light = m.lab[..., 0]
    mid = m.picture & (light >= 5) & (light <= 95)
    off = ((m.distance > OFF_TINT) & mid).view(np.uint8)
    off = cv2.morphologyEx(off, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return float(off.sum() / max(int(mid.sum()), 1))


def hue_families(m: Measures) -> int:
    """How many 30-degree hue families each hold at least :data:`HUE_SHARE` of the picture in
    clearly coloured pixels (chroma at least :data:`HUE_CHROMA`) that depart from the tint."""
    a, b = m.lab[..., 1], m.lab[..., 2]
    strong = m.picture & (np.hypot(a, b) >= HUE_CHROMA) & (m.distance > OFF_TINT)
    hue = (np.degrees(np.arctan2(b[strong], a[strong])) % 360 // 30).astype(np.int64)
    counts = np.bincount(hue, minlength=12) / max(int(m.picture.sum()), 1)
    return int((counts >= HUE_SHARE).sum())


def judge_view(m: Measures, side: int = JUDGE_SIDE) -> np.ndarray:
    """The colour judge's view: (5, side, side) float32 of L*, a*, b* and the residual, scaled
    to about unit range, of the picture's bounding box (surround pixels inside it carry the
    tint of their lightness: no evidence either way)."""
    x, y, w, h = cv2.boundingRect(m.picture.view(np.uint8))
    box = (slice(y, y + h), slice(x, x + w))
    lab, res, ab = m.lab[box], m.residual[box], m.lab[box][..., 1:]
    colour = np.empty((h, w, 3), np.float32)  # L* / 50 - 1, a*b* / 40
    np.divide(lab[..., 0], 50.0, out=colour[..., 0])
    colour[..., 0] -= 1.0
    away = np.divide(res, 20.0, dtype=np.float32)  # the residual / 20
    surround = ~m.picture[box][..., None]
    if surround.any():  # its a*b* -> the tint of its lightness, its residual -> 0
        ab = np.subtract(ab, res, where=surround, out=ab.copy())
        np.copyto(away, 0.0, where=surround)
    np.divide(ab, 40.0, out=colour[..., 1:])
    view = np.empty((5, side, side), np.float32)
    for channels, planes in ((colour, view[:3]), (away, view[3:])):  # OpenCV: <= 4 at a time
        planes[:] = cv2.resize(channels, (side, side), interpolation=cv2.INTER_AREA).transpose(
            2, 0, 1
        )
    return view


def colour_evidence(rgb: Image.Image, limits: ImageLimits = DEFAULT_LIMITS) -> ColourEvidence:
    """Decide whether ``rgb`` is a colour photograph or a monochrome one (toned, stained, foxed,
    cracked, stamped, annotated, in its surround), with the evidence; ``score`` is the
    probability that it is a colour photograph."""
    m = measure(rgb)
    if max(rgb.size) < limits.judge_min_side:
        share = off_tint_share(m)
        return ColourEvidence(
            share,
            share >= limits.min_colour_fraction,
            f"small picture, single-tint rule: {share:.2%} of pixels depart from one tint",
            stage="small picture",
        )
    spread = one_tint_spread(m)
    if spread < limits.one_tint_spread:
        detail = f"one tint: 99% of the picture within {spread:.1f} of it"
        return ColourEvidence(0.0, False, detail, stage="one tint")
    share = off_tint_share(m)  # not needed for a picture of one tint
    families = hue_families(m)
    if families >= HUE_FAMILIES and share >= MANY_HUES_AREA:
        detail = f"many hues: {families} hue families, {share:.0%} of the picture off one tint"
        return ColourEvidence(1.0, True, detail, stage="many hues")
    return _ask_judge(m, share, limits)


def _ask_judge(m: Measures, share: float, limits: ImageLimits) -> ColourEvidence:
    # loads onnxruntime: not at import
    from koala.judge_runtime import monochrome_probability, second_opinion

    view = judge_view(m)
    mono = float(monochrome_probability(view[None])[0])
    second = limits.second_opinion_band[0] <= mono < limits.second_opinion_band[1]
    if second:  # near the cut: both judges, each on the view's symmetries
        mono = second_opinion(view, mono)
    low, high = limits.uncertain_band
    uncertain = low <= mono < high
    detail = (
        f"colour judge{'s' if second else ''}: {1.0 - mono:.0%} a colour photograph"
        f" ({share:.2%} of the picture departs from one tint)"
        + ("; uncertain: check it" if uncertain else "")
    )
    colour = mono < limits.monochrome_probability
    stage = "second opinion" if second else "judge"
    return ColourEvidence(round(1.0 - mono, 4), colour, detail, uncertain, stage)
