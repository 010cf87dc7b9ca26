"""Run configs of the stages, without importing torch or Prefect: the CLI, the flows and the
tasks take their defaults from here, so each default is written once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from koala.choices import DEFAULT_LIMITS, EMBED_SIZE, ENCODER_SIZE, ImageLimits
from models.config import CALIBRATION_TARGET, DEFAULT_BACKBONE

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class BuildConfig:
    """How ``build-dataset`` ingests and shards (the image limits are ``ImageLimits``)."""

    shard_size: int = 1000
    #: train,val,test ratios, or ``folders`` (train/val/test folders in the inputs' paths)
    splits: str = "0.9,0.05,0.05"
    #: most inputs per ingest task (see flows.build_dataset.balanced_chunk_size)
    chunk_size: int = 256
    max_rejected_fraction: float = 0.5
    keep_staging: bool = False


@dataclass(frozen=True)
class PreprocessConfig:
    """How features are made; everything here is part of the cache key (but batch size)."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    encoder_size: int = ENCODER_SIZE
    embed_size: int = EMBED_SIZE
    #: images per forward; None: CPU_BATCH on CPU (one image's activations stay in cache:
    #: 2 workers ran 1.4x one at batch 4, 1.6-2.1x at batch 1), GPU_BATCH on CUDA
    batch_size: int | None = None
    device: str | None = None

    CPU_BATCH = 1
    GPU_BATCH = 64

    def batch_for(self, device: torch.device) -> int:
        return self.batch_size or (self.GPU_BATCH if device.type == "cuda" else self.CPU_BATCH)


@dataclass(frozen=True)
class ColorizeConfig:
    """What a colorize run does to each input (the same for every batch)."""

    registry: str
    model: str
    output: str
    format: str = "auto"
    #: how colour-mode scans are judged: auto (by their pixels), colour or monochrome
    treat_as: str = "auto"
    #: colour strength of the results: 1 as the model predicts, 0 gray, above 1 more vivid
    saturation: float = 1.0
    #: also redo inputs that failed for a permanent reason (transient ones are always retried)
    retry_failed: bool = False
    #: where the colour hints are: a folder or prefix of ``<name>.hints.json`` sidecars, or a
    #: CSV (None: sidecars beside the scans; :mod:`koala.hints`)
    hints: str | None = None
    #: images per model forward
    batch_size: int = 8
    #: decoded megapixels held at once by a batch before it runs the model
    max_batch_megapixels: float = 64.0
    device: str | None = None
    #: inference precision: auto (float16 on CUDA, bfloat16 on CPUs that have it), fp32, bf16
    precision: str = "auto"
    limits: ImageLimits = DEFAULT_LIMITS


@dataclass(frozen=True)
class EvaluateConfig:
    """What an evaluation scores."""

    split: str = "test"
    #: images in the report's sample grid
    samples: int = 8
    #: score only the first this many images of the split (in shard order; None: all)
    limit: int | None = None


@dataclass(frozen=True)
class CompareConfig:
    """How ``compare`` trains every model (the rest is ``TrainConfig``'s)."""

    budget_minutes: float = 10.0
    batch_size: int = 8
    colour_target: float | None = CALIBRATION_TARGET
    #: None: every model trains for the whole budget (its best val epoch is kept)
    patience: int | None = None
    #: epochs is only a ceiling: the budget ends training (and paces its cosine schedule)
    max_epochs: int = 1000


@dataclass(frozen=True)
class NightlyConfig:
    """How the nightly run trains its challenger and judges it against the champion."""

    budget_minutes: float | None = 60.0
    colour_target: float | None = 0.85
    metric: str = "psnr"
    margin: float = 0.05
