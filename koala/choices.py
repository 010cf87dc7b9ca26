"""Plain values that the CLI's defaults, the run configs and the checks before a run need:
image limits, view sizes, output formats and scan modes. Imports nothing heavy (no NumPy,
SciPy or torch), so a bad argument fails in well under a second."""

from __future__ import annotations

from dataclasses import dataclass

#: the suffixes of the files a folder source lists as images
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})
#: the models' two square views: the encoder's (Lab, the colours) and the embedding's (gray)
ENCODER_SIZE = 200
EMBED_SIZE = 299
JUDGE_SIDE = 96  #: the colour judge's view is JUDGE_SIDE x JUDGE_SIDE (koala/monochrome.py)
JUDGE_CHANNELS = 5  #: L*, a*, b*, and a*, b* beyond the tint of each lightness
#: concrete output formats and their file suffixes
FORMATS = {"jpg": ".jpg", "png": ".png", "tiff": ".tif"}
#: what ``--format`` accepts: ``auto`` keeps each input's format (see koala.outputs)
FORMAT_CHOICES = ("auto", *FORMATS)
#: how a colour-mode scan is judged: by its pixels, or as the archivist says
TREAT_AS = ("auto", "colour", "monochrome")
#: where models run: auto (the GPU when there is one), cpu or cuda
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable training image is (defaults calibrated in docs/architecture.md)."""

    min_side: int = 64
    max_pixels: int = 89_478_485
    #: a*b* distance (Lab units) from the lightness-conditional tint that makes a pixel coloured.
    chroma_threshold: float = 6.0
    #: a picture is monochrome when the colour judge gives it at least this probability; above
    #: 0.5 because calling a colour photograph monochrome costs more (its colour is replaced)
    #: than leaving a print uncolorized (``--treat-as monochrome`` recovers it)
    monochrome_probability: float = 0.85
    #: when the first judge's probability is in [low, high), both judges look again at the
    #: view and its symmetries and their mean decides (docs/monochrome-calibration.md)
    second_opinion_band: tuple[float, float] = (0.5, 0.98)
    #: the judge's probabilities of "monochrome" in [low, high) are said to be uncertain: the
    #: index flags them (``colour_uncertain``) and the contact sheet shows them first
    uncertain_band: tuple[float, float] = (0.3, 0.95)
    #: a picture whose a*b* lie within this of one tint per lightness on 99% of its pixels is
    #: monochrome without asking the judge (2.3 Lab units: a just-noticeable difference)
    one_tint_spread: float = 2.3
    #: pictures with a shorter long side than this are smaller than the judge's view (trained on
    #: 960 px scans) and are judged by the single-tint rule: colour when at least
    #: ``min_colour_fraction`` of their mid-tone pixels depart from one tint
    judge_min_side: int = 384
    min_colour_fraction: float = 0.0007


DEFAULT_LIMITS = ImageLimits()

#: a scan's colour hints sidecar: ``<scan name without extension>.hints.json`` (koala.hints);
#: never an input of its own
SIDECAR_SUFFIX = ".hints.json"
