"""Names and run configs of the models layer, without importing torch: the CLI, the flows and
the tasks take their defaults from here, so each default is written once."""

from __future__ import annotations

from dataclasses import dataclass

#: the embedding backbones by name
EFFICIENTNET_LITE0 = "efficientnet-lite0"
INCEPTION_RESNET_V2 = "inception-resnet-v2"
#: the backbone used wherever none is named
DEFAULT_BACKBONE = EFFICIENTNET_LITE0
#: Koala's flagship architecture: what colorize uses and the nightly run retrains by default
FLAGSHIP = "chroma_unet"
#: the val colourfulness (a fraction of the ground truth's) that comparisons calibrate to
CALIBRATION_TARGET = 0.8


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; recorded in its card."""

    epochs: int = 30
    budget_minutes: float | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    device: str | None = None
    workers: int = 0
    #: fit a chroma gain so that val colourfulness reaches this fraction of the ground truth's
    #: (see models/calibration.py); None leaves the outputs as trained
    colour_target: float | None = None
    #: random crops for models without a global embedding (whose crops would not match it)
    crop_size: int = 176
    #: train on the views area-downsampled to this size (None: the 200 px view as stored);
    #: validation and prediction stay at the view size
    resolution: int | None = None
    #: end an epoch (validation, checkpoint) after this many samples (None: the whole split)
    epoch_samples: int | None = None
    #: start from this registered model's weights (``name@version``) instead of from scratch
    init_from: str | None = None
    #: a campaign: the cosine learning-rate schedule runs over this many samples, across legs
    #: and resumes, and training ends there (None: over ``epochs`` or the budget)
    total_samples: int | None = None
    #: end this leg after so many minutes of training: checkpoint, register the best so far;
    #: ``--resume`` continues exactly where it stopped
    leg_minutes: float | None = None
    #: checkpoint (model, optimizers, data position, random state) at least this often
    checkpoint_minutes: float = 10.0
    #: where checkpoints live (None: ``ROOT/checkpoints``); a campaign keeps them in a fixed
    #: folder outside the dataset and the work tree so that the next leg finds them
    checkpoint_dir: str | None = None
