"""Training one colorization model on feature shards: seeded, checkpointed every epoch and on
interruption, resumable, early-stopped on the val split, optionally under a wall-clock budget;
the best epoch is registered in the model registry."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from skimage.metrics import peak_signal_noise_ratio
from torch import nn
from tqdm import tqdm

from koala import storage
from koala.colour import colourfulness, lab_to_rgb
from koala.errors import KoalaError
from koala.lifecycle import stop_on_signals, stop_requested
from models.backbones import BACKBONE_INFO
from models.blocks import AB_SCALE
from models.calibration import collect_crops, fit_chroma_gain, fit_prior_correction
from models.config import DEFAULT_BACKBONE, TrainConfig
from models.data import feature_shards, make_loader, train_mean_ab_of
from models.losses import box_mask
from models.registry import build_model, load_model, options_for, save_model
from models.runtime import fast_cpu_bf16, hardware, resolve_device, set_torch_threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_dir(root: str, name: str) -> str:
    return storage.join(root, "checkpoints", name)


Optimizers = dict[str, torch.optim.Optimizer]


def _save_checkpoint(path: str, model: nn.Module, opts: Optimizers, state: dict) -> None:
    blob = save_safetensors(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    )
    storage.atomic_write_bytes(storage.join(path, "last.safetensors"), blob)
    buf = io.BytesIO()
    # tensors and numbers only: loads with weights_only=True
    torch.save({name: opt.state_dict() for name, opt in opts.items()}, buf)
    storage.atomic_write_bytes(storage.join(path, "optimizer.pt"), buf.getvalue())
    storage.atomic_write_bytes(storage.join(path, "state.json"), json.dumps(state).encode())


def _load_checkpoint(path: str, model: nn.Module, opts: Optimizers) -> dict | None:
    if not storage.exists(storage.join(path, "state.json")):
        return None
    model.load_state_dict(
        load_safetensors(storage.read_bytes(storage.join(path, "last.safetensors")))
    )
    saved = torch.load(
        io.BytesIO(storage.read_bytes(storage.join(path, "optimizer.pt"))), weights_only=True
    )
    for name, opt in opts.items():
        opt.load_state_dict(saved[name])
    return json.loads(storage.read_bytes(storage.join(path, "state.json")))


def view_scores(
    light: torch.Tensor, pred: torch.Tensor, ab: torch.Tensor, box: torch.Tensor
) -> tuple[list[float], list[float], list[float]]:
    """Per sample, inside the pad box: RGB PSNR of L + predicted a*b* against L + true a*b*,
    and the colourfulness of the prediction and of the truth."""
    psnrs, colour, true_colour = [], [], []
    for i in range(light.shape[0]):
        x0, y0, x1, y1 = box[i].tolist()
        lum = light[i, 0, y0:y1, x0:x1].numpy()[..., None] * 100.0
        out, truth = (
            lab_to_rgb(
                np.concatenate([lum, a[:, y0:y1, x0:x1].numpy().transpose(1, 2, 0) * AB_SCALE], -1)
            )
            for a in (pred[i].float().cpu(), ab[i])
        )
        psnrs.append(peak_signal_noise_ratio(truth, out, data_range=255))
        colour.append(colourfulness(out))
        true_colour.append(colourfulness(truth))
    return psnrs, colour, true_colour


def evaluate_val(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
    """The model's objective, RGB PSNR and colourfulness (a fraction of the truth's) on the
    val split, with its chroma gain."""
    model.eval()
    losses, psnrs, colour, true_colour = [], [], [], []
    gain = float(getattr(model, "chroma_gain", 1.0))
    with torch.inference_mode():
        for b in loader:
            light, ab = b["light"].to(device), b["ab"].to(device)
            mask = box_mask(b["box"].to(device), light.shape[-2:])
            loss, pred = model.objective(light, b["embedding"].to(device), ab, mask)
            pred = (pred.float() * gain).clamp(-1.0, 127.0 / 128) if gain != 1.0 else pred
            losses.append(loss.item() * len(light))
            scores = view_scores(b["light"], pred.cpu(), b["ab"], b["box"])
            for total, part in zip((psnrs, colour, true_colour), scores, strict=True):
                total.extend(part)
    n = max(len(psnrs), 1)
    return {
        "loss": sum(losses) / n,
        "psnr": sum(psnrs) / n,
        "colourfulness": sum(colour) / max(sum(true_colour), 1e-6),
    }


def train_model(
    root: str,
    name: str,
    backbone: str = DEFAULT_BACKBONE,
    cfg: TrainConfig = TrainConfig(),
    resume: bool = False,
    log: Callable[[str], None] = print,
    model_options: dict | None = None,
) -> dict:
    """Train ``name`` on ``root``'s feature shards; register the best epoch; return a summary."""
    run = _setup(root, name, backbone, cfg, log, model_options)
    _restore(run, resume)
    _start(run)
    with stop_on_signals():
        try:
            for epoch in range(run.state["epoch"], planned_epochs(cfg)):
                if _epoch(run, epoch):
                    break
        except KeyboardInterrupt:
            _checkpoint(run)
            log(
                f"{name}: interrupted; checkpoint saved in epoch {run.state['epoch'] + 1} "
                f"after {run.state['samples']:,} samples"
            )
            raise
    return _register(run)


def planned_epochs(cfg: TrainConfig) -> int:
    """The epochs to run: enough for ``total_samples`` in a campaign, else ``epochs``."""
    if cfg.total_samples and cfg.epoch_samples:
        return math.ceil(cfg.total_samples / cfg.epoch_samples)
    return cfg.epochs


FRESH_STATE = {
    "epoch": 0,
    "best_val": float("inf"),
    "best_epoch": -1,
    "stale": 0,
    "history": [],
    "seconds": 0.0,
    "samples": 0,
    "position": 0,
    "totals": {},
    "legs": [],
}


@dataclass
class _Run:
    """One model's training in progress: what it trains on and with, and how far it got."""

    root: str
    name: str
    backbone: str
    cfg: TrainConfig
    log: Callable[[str], None]
    device: torch.device
    model: nn.Module
    opts: Optimizers
    train_urls: list[str]
    val_urls: list[str]
    #: saved in every checkpoint: epochs done, best val and when, epochs without improvement,
    #: history, training seconds and samples of all legs, the position in the current epoch
    #: (samples done, their loss sums), the legs, torch's random state
    state: dict = field(default_factory=lambda: copy.deepcopy(FRESH_STATE))
    #: the best epoch's weights (safetensors), once there is one
    best_blob: bytes | None = None
    val_loader: Any = None
    autocast: Any = None
    #: whether training runs under bfloat16 autocast (CUDA, or a CPU with native bf16)
    bf16: bool = False
    #: perf_counter at the start of the training time already spent (it goes on after a resume)
    started: float = 0.0
    budget: float | None = None

    #: this leg's start (perf_counter) and its record in ``state["legs"]``
    leg_started: float = 0.0
    last_checkpoint: float = 0.0

    @property
    def ckpt(self) -> str:
        if self.cfg.checkpoint_dir:
            return storage.join(os.path.expanduser(self.cfg.checkpoint_dir), self.name)
        return checkpoint_dir(self.root, self.name)


def _setup(
    root: str,
    name: str,
    backbone: str,
    cfg: TrainConfig,
    log: Callable[[str], None],
    model_options: dict | None,
) -> _Run:
    """Seeded, on its device, the model and its optimizers, the feature shards found."""
    seed_everything(cfg.seed)
    set_torch_threads()
    device = resolve_device(cfg.device)
    options = {"embedding_dim": BACKBONE_INFO[backbone].embedding_dim, **(model_options or {})}
    model = initial_model(root, name, options, cfg.init_from).to(device)
    # channels-last: mkldnn's fast convolutions on CPU (depthwise ones above all), tensor cores
    model = model.to(memory_format=torch.channels_last)
    train_urls = feature_shards(root, backbone, "train")
    val_urls = feature_shards(root, backbone, "val")
    opts = model.optimizers(cfg.lr, cfg.weight_decay)
    run = _Run(root, name, backbone, cfg, log, device, model, opts, train_urls, val_urls)
    for opt in opts.values():
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return run


#: prefixes of the parts that only training uses: a fine-tune without them may drop them
TRAINING_ONLY = ("discriminator.",)


def initial_model(root: str, name: str, options: dict, init_from: str | None) -> nn.Module:
    """The network to train: new, or the registered ``init_from`` (``name@version``: its
    weights and config) to fine-tune, with ``options`` overriding that config."""
    if not init_from:
        return build_model(name, **options_for(name, options))
    start, card = load_model(root, init_from)
    if card["architecture"] != name:
        raise KoalaError(f"init_from {init_from!r} is a {card['architecture']}, not a {name}")
    overrides = options_for(name, {**options, "pretrained": False})
    model = build_model(name, card["config"], **overrides)
    wanted = model.state_dict().keys()
    # a training-only part the new config leaves out (the adversarial term's discriminator)
    # is dropped; every other key must match
    state = {
        k: v
        for k, v in start.state_dict().items()
        if k in wanted or not k.startswith(TRAINING_ONLY)
    }
    model.load_state_dict(state)
    return model


def _restore(run: _Run, resume: bool) -> None:
    """With ``resume``, the last checkpoint (model, optimizers, state) and the best weights."""
    if not resume:
        return
    state_json = storage.join(run.ckpt, "state.json")
    if storage.exists(state_json):
        saved = json.loads(storage.read_bytes(state_json))
        in_epoch = saved["epoch"] - (0 if saved.get("position") else 1)  # saved mid-epoch?
        _maybe_finetune(run.model, run.opts, in_epoch)  # the param groups it was saved with
    if loaded := _load_checkpoint(run.ckpt, run.model, run.opts):
        run.state = {
            **copy.deepcopy(FRESH_STATE),
            **loaded,
        }  # checkpoints from before campaigns lack some
        if rng := run.state.get("torch_rng"):
            torch.set_rng_state(
                torch.frombuffer(bytearray(base64.b64decode(rng)), dtype=torch.uint8)
            )
        run.log(
            f"{run.name}: resuming in epoch {run.state['epoch'] + 1} after "
            f"{run.state['samples']:,} samples ({run.state['seconds'] / 3600:.2f} h)"
        )
    best = storage.join(run.ckpt, "best.safetensors")
    if storage.exists(best):
        run.best_blob = storage.read_bytes(best)


def _start(run: _Run) -> None:
    """The val loader, the model's prior from the train split, the clock and the budget."""
    cfg, device = run.cfg, run.device
    run.val_loader = make_loader(run.val_urls, cfg.batch_size, train=False)
    run.model.fit_prior(make_loader(run.train_urls, cfg.batch_size, train=False))
    run.model.to(device)
    run.bf16 = device.type == "cuda" or fast_cpu_bf16()
    run.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16)
    run.started = time.perf_counter() - run.state["seconds"]
    run.budget = cfg.budget_minutes * 60 if cfg.budget_minutes else None
    run.leg_started = run.last_checkpoint = time.perf_counter()
    run.state["legs"] = [*run.state["legs"], _new_leg(run)]


def _new_leg(run: _Run) -> dict:
    """The record of the leg that starts now (updated at every checkpoint)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "leg": len(run.state["legs"]) + 1,
        "started_at": now,
        "ended_at": now,
        "hours": 0.0,
        "samples_at_start": run.state["samples"],
        "samples": 0,
        "hardware": hardware(),
        "threads": torch.get_num_threads(),
        "bf16_autocast": run.bf16,
    }


def _checkpoint(run: _Run) -> None:
    """Save the model, optimizers and state now (the leg's record and random state too)."""
    state, now = run.state, time.perf_counter()
    state["seconds"] = now - run.started
    leg = state["legs"][-1]
    leg["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    leg["hours"] = round((now - run.leg_started) / 3600, 4)
    leg["samples"] = state["samples"] - leg["samples_at_start"]
    leg["best_val_psnr"] = state.get("best_psnr")
    state["torch_rng"] = base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()
    _save_checkpoint(run.ckpt, run.model, run.opts, state)
    run.last_checkpoint = now


def _epoch(run: _Run, epoch: int) -> bool:
    """Train one epoch, score it on val, keep it if best, checkpoint; True: stop training."""
    _maybe_finetune(run.model, run.opts, epoch)
    _set_lr(run, epoch)
    totals, count, stop = _train_epoch(run, epoch)
    if stop == "leg":  # mid-epoch: the position is in the checkpoint, --resume goes on
        _checkpoint(run)
        run.log(f"{run.name}: leg over after {run.state['samples']:,} samples; --resume goes on")
        return True
    val = evaluate_val(run.model, run.val_loader, run.device)
    _record(run, epoch, totals, count, val)
    _keep_best(run, epoch, val)
    if run.cfg.total_samples:
        _keep_epoch(run, epoch, val)
    if run.cfg.total_samples and run.state["samples"] >= run.cfg.total_samples:
        stop = "the campaign's samples"
    elif run.state["stale"] >= run.cfg.patience:
        stop = "no val improvement"
    _checkpoint(run)
    if stop:
        run.log(f"{run.name}: stopping ({stop})")
        return True
    return False


def _set_lr(run: _Run, epoch: int) -> None:
    """Cosine decay over a campaign's samples, else over the planned epochs, or over the
    budget when that ends first."""
    if run.cfg.total_samples:
        factor = cosine_factor(run.state["samples"] / run.cfg.total_samples)
    else:
        elapsed = (time.perf_counter() - run.started) / run.budget if run.budget else 0.0
        factor = cosine_factor(max(epoch / run.cfg.epochs, elapsed))
    for opt in run.opts.values():
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor


def _train_epoch(run: _Run, epoch: int) -> tuple[dict[str, float], int, str | None]:
    """One pass over the train split (from where a resumed checkpoint left it): the summed
    losses, the samples seen, and why it ended early ("budget", "leg", or None); a requested
    stop raises KeyboardInterrupt."""
    model, cfg, state = run.model, run.cfg, run.state
    model.train()
    batches = _epoch_batches(run, epoch)
    totals, count = dict(state["totals"]), state["position"]
    with tqdm(
        desc=f"{run.name} epoch {epoch + 1}/{planned_epochs(cfg)}",
        total=cfg.epoch_samples,
        initial=count,
        unit=" image",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    ) as bar:
        for b in batches:
            if cfg.total_samples:
                _set_lr(run, epoch)
            losses = _step(run, b)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value * len(b["light"])
            count += len(b["light"])
            state.update(position=count, totals=totals, samples=state["samples"] + len(b["light"]))
            bar.update(len(b["light"]))
            bar.set_postfix({k: f"{v / count:.4f}" for k, v in totals.items()})
            if stop_requested():
                raise KeyboardInterrupt("stop requested")
            if cfg.epoch_samples and count >= cfg.epoch_samples:
                break  # validation first: a leg or budget ends at the next step
            if why := _why_stop(run):
                return totals, count, why
            if time.perf_counter() - run.last_checkpoint > cfg.checkpoint_minutes * 60:
                _checkpoint(run)
    return totals, count, None


def _epoch_batches(run: _Run, epoch: int) -> Iterator[dict]:
    """The epoch's batches, seeded by epoch; after a resume mid-epoch, the batches already
    trained on are drawn and dropped, so the stream (and its augmentation) goes on exactly."""
    cfg = run.cfg
    loader = make_loader(
        run.train_urls,
        cfg.batch_size,
        train=True,
        seed=cfg.seed + epoch,
        workers=cfg.workers,
        crop_size=None if run.model.uses_embedding else cfg.crop_size,
    )
    batches = iter(loader)
    done = 0
    while done < run.state["position"]:
        done += len(next(batches)["light"])
    return batches


def _step(run: _Run, b: dict) -> dict[str, float]:
    """One optimisation step on a batch (at the training resolution); its losses."""
    light, ab, mask = _training_view(b, run.device, run.cfg.resolution)
    with run.autocast:
        losses = run.model.train_step(light, b["embedding"].to(run.device), ab, mask, run.opts)
    return losses


def _why_stop(run: _Run) -> str | None:
    """Why the epoch must end now: "budget" or "leg" when that time ran out, else None."""
    now = time.perf_counter()
    if run.budget and now - run.started > run.budget:
        return "budget"
    if run.cfg.leg_minutes and now - run.leg_started > run.cfg.leg_minutes * 60:
        return "leg"
    return None


def _training_view(
    b: dict, device: torch.device, resolution: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L, a*b* and the real-pixel mask of a batch, area-downsampled to ``resolution``."""
    light, ab = b["light"].to(device), b["ab"].to(device)
    mask = box_mask(b["box"].to(device), light.shape[-2:])
    if resolution and resolution != light.shape[-1]:
        size = (resolution, resolution)
        light, ab, mask = (F.interpolate(x, size=size, mode="area") for x in (light, ab, mask))
        mask = (mask > 0.5).float()
    return light.contiguous(memory_format=torch.channels_last), ab, mask


def _record(
    run: _Run, epoch: int, totals: dict[str, float], count: int, val: dict[str, float]
) -> None:
    """The epoch in the state's history, and its log line."""
    state = run.state
    state.update(epoch=epoch + 1, position=0, totals={})  # the next epoch starts afresh
    state["seconds"] = time.perf_counter() - run.started  # all legs together
    means = {k: v / max(count, 1) for k, v in totals.items()}
    train_loss = means.pop("loss", float("nan"))
    state["history"].append(
        {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **{f"train_{k}": v for k, v in means.items()},
            "val_loss": val["loss"],
            "val_psnr": val["psnr"],
            "val_colourfulness": val["colourfulness"],
            "seconds": round(state["seconds"], 1),
        }
    )
    extra = "".join(f", {k} {v:.4f}" for k, v in means.items())
    run.log(
        f"{run.name} epoch {epoch + 1}: train {train_loss:.4f}{extra}, val "
        f"{val['loss']:.4f}, val PSNR {val['psnr']:.2f} dB, colourfulness "
        f"{val['colourfulness']:.2f} ({state['seconds']:.0f} s)"
    )


def _keep_best(run: _Run, epoch: int, val: dict[str, float]) -> None:
    """Save the weights when val improved or held (a tie goes to the later epoch: a model
    training its hint inputs alone keeps its val loss); else count one more epoch without
    improvement."""
    if val["loss"] <= run.state["best_val"]:
        run.state.update(best_val=val["loss"], best_epoch=epoch + 1, stale=0, best_psnr=val["psnr"])
        run.best_blob = save_safetensors(
            {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
        )
        storage.atomic_write_bytes(storage.join(run.ckpt, "best.safetensors"), run.best_blob)
    else:
        run.state["stale"] += 1


def _keep_epoch(run: _Run, epoch: int, val: dict[str, float]) -> str:
    """A campaign keeps every epoch's weights (bf16) and card in ``CKPT/epochs/NNN/``, a
    restart point that ``koala models import`` registers: the epoch that val CE did not pick
    can still be scored and chosen (e.g. the best PSNR at a colourfulness floor)."""
    folder = storage.join(run.ckpt, "epochs", f"{epoch + 1:03d}")
    state = {
        k: (v.to(torch.bfloat16) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in run.model.state_dict().items()
    }
    card = _card(run, dict(val), None) | {
        "name": run.name,
        "version": f"epoch-{epoch + 1:03d}",
        "config": asdict(run.model.config),
        "epoch": epoch + 1,
    }
    blob = save_safetensors(state)
    storage.atomic_write_bytes(storage.join(folder, "weights.bf16.safetensors"), blob)
    storage.atomic_write_bytes(storage.join(folder, "card.json"), json.dumps(card).encode())
    return folder


def _register(run: _Run) -> dict:
    """Register the best epoch's weights (chroma-calibrated when the config asks); return the
    training's summary."""
    model, state = run.model, run.state
    if run.best_blob is None and state["best_epoch"] < 0:  # a leg that ended in its first epoch
        run.log(f"{run.name}: no epoch finished yet; nothing registered (--resume goes on)")
        val = {"loss": None, "psnr": None}
        return {"name": run.name, "version": None, "val": val, "epochs": 0, "seconds": 0.0}
    if run.best_blob is not None:
        model.load_state_dict(load_safetensors(run.best_blob))
    val_metrics = {"loss": state["best_val"], "psnr": state.get("best_psnr")}
    calibration = None
    if run.cfg.colour_target:
        val_metrics, calibration = calibrate(
            model,
            run.val_loader,
            run.device,
            run.cfg.colour_target,
            lambda m: run.log(f"{run.name}: {m}"),
            before_psnr=state.get("best_psnr"),  # the best epoch's, measured without a gain
        )
    card = _card(run, val_metrics, calibration)
    version = save_model(run.root, run.name, model.cpu(), card)
    run.log(f"{run.name}: registered version {version} (best epoch {state['best_epoch']})")
    return {
        "name": run.name,
        "version": version,
        "val": card["val_metrics"],
        "epochs": state["epoch"],
        "seconds": card["training_seconds"],
    }


def _card(run: _Run, val_metrics: dict, calibration: dict | None) -> dict:
    """The model card: how it was trained, on what, and how well."""
    state = run.state
    features_index = storage.join(run.root, "features", run.backbone, "index.parquet")
    return {
        "architecture": run.name,
        "backbone": run.backbone,
        "backbone_weights_sha256": _first_weights_hash(features_index),
        "train_mean_ab": train_mean_ab_of(features_index),
        "data_index_sha256": hashlib.sha256(
            storage.read_bytes(storage.join(run.root, "index.parquet"))
        ).hexdigest(),
        "training": asdict(run.cfg),
        "hardware": hardware(),
        "bf16_autocast": run.bf16,
        "optimizers": {k: type(opt).__name__ for k, opt in run.opts.items()},
        "training_seconds": round(state["seconds"], 1),
        "training_samples": state["samples"],
        "legs": state["legs"],
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "val_metrics": val_metrics,
        "chroma_gain": getattr(run.model, "chroma_gain", 1.0),
        "calibration": calibration,
        "history": state["history"],
    }


def calibrate(
    model: nn.Module,
    val_loader,
    device: torch.device,
    target: float,
    log: Callable[[str], None],
    before_psnr: float | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Fit and set ``model.chroma_gain`` for a val colourfulness ``target``; return the val
    metrics with the gain and the calibration record for the card. ``before_psnr`` (val PSNR
    without a gain) is measured when the caller does not know it."""
    model.chroma_gain = 1.0
    if hasattr(model, "prior_correction"):  # start from the model's own posterior
        model.prior_correction = 0.0
    if before_psnr is None:
        before_psnr = evaluate_val(model, val_loader, device)["psnr"]
    if hasattr(model, "prior_correction"):  # a colour distribution: correct its prior
        alpha, before, after = fit_prior_correction(model, val_loader, device, target)
        model.prior_correction = alpha
        model.config = replace(model.config, prior_correction=alpha)
        model.to(device)
        what = f"prior correction {alpha:.2f}"
    else:
        gain, before, after = fit_chroma_gain(collect_crops(model, val_loader, device), target)
        model.chroma_gain = gain
        what = f"chroma gain {gain:.2f}"
    val = evaluate_val(model, val_loader, device)
    log(
        f"{what}: val colourfulness {before:.2f} -> {after:.2f} of ground "
        f"truth; val PSNR {before_psnr:.2f} -> {val['psnr']:.2f} dB"
    )
    return val, {"target": target, "ratio_before": before, "ratio_after": after}


def calibrate_registered(
    root: str, spec: str, target: float, log: Callable[[str], None] = print
) -> str:
    """Register a copy of ``spec`` (same weights) calibrated for a val colourfulness
    ``target`` on ``root``'s features; return the new version."""
    model, card = load_model(root, spec)
    device = resolve_device(None)
    backbone = card.get("backbone", DEFAULT_BACKBONE)
    if hasattr(model, "log_prior") and not model.log_prior.any():  # saved before it existed
        train = feature_shards(root, backbone, "train")
        model.fit_prior(make_loader(train, TrainConfig.batch_size, train=False))
    loader = make_loader(feature_shards(root, backbone, "val"), TrainConfig.batch_size, train=False)
    val, calibration = calibrate(model.to(device), loader, device, target, log)
    derived = ("weights_sha256", "created_at", "config", "parameters", "code_version")
    extra = {k: v for k, v in card.items() if k not in derived}  # save_model writes these
    new = {**extra, "val_metrics": val, "chroma_gain": model.chroma_gain}
    new["calibration"] = {**calibration, "calibrated_from": card["version"]}
    return save_model(root, card["name"], model.cpu(), new)


def cosine_factor(progress: float) -> float:
    """Learning-rate factor under cosine decay from 1 to 0 as ``progress`` goes from 0 to 1."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _maybe_finetune(model: nn.Module, opts: Optimizers, epoch: int) -> None:
    """Unfreeze a pretrained encoder (at a tenth of the learning rate) once ``epoch`` reaches
    its config's ``finetune_after``; models without one are left alone."""
    after = getattr(model.config, "finetune_after", None)
    if after is None or epoch < after or model.encoder_trainable:
        return
    model.set_encoder_trainable(True)
    lr = opts["model"].param_groups[0]["initial_lr"] / 10
    opts["model"].add_param_group(
        {"params": model.encoder_parameters(), "lr": lr, "initial_lr": lr}
    )


def _first_weights_hash(features_index: str) -> str | None:
    if not storage.exists(features_index):
        return None
    return str(storage.read_parquet(features_index, columns=["weights_sha256"]).iloc[0, 0])
