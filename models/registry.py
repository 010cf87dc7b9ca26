"""The model registry: ``ROOT/models/{name}/{version}/weights.safetensors`` + ``card.json``, and a
``champion.json`` pointer per name saying which version colorization uses by default.

Weights are safetensors (never unpickled); a card records the architecture and its config, the
embedding backbone and its weights hash, the data it was trained on, code version, training time
and validation metrics.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict
from typing import Any

from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from koala import storage
from koala.errors import one_line
from koala.version import __version__
from models.autoencoder import Autoencoder, AutoencoderConfig
from models.cards import (  # noqa: F401  (the registry API in one place)
    SHIPPED,
    SHIPPED_REGISTRY,
    RegistryError,
    champion,
    copy_version,
    find_card,
    list_models,
    load_card,
    locate,
    model_dir,
    promote,
    registry_root,
    resolve,
    versions,
)
from models.chroma_unet import ChromaUNet, ChromaUNetConfig
from models.gan import GAN, GANConfig
from models.koalarization import Koalarization, KoalarizationConfig
from models.pretrained_encoder import PretrainedEncoder, PretrainedEncoderConfig
from models.regression import Regression, RegressionConfig
from models.unet import UNet, UNetConfig
from models.zhang import Zhang, ZhangConfig, ZhangResNetConfig

#: name -> (network class, its config dataclass); ``unet`` is Koala's own flagship
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "chroma_unet": (ChromaUNet, ChromaUNetConfig),
    "unet": (UNet, UNetConfig),
    "koalarization": (Koalarization, KoalarizationConfig),
    "zhang": (Zhang, ZhangConfig),
    "zhang_resnet": (Zhang, ZhangResNetConfig),
    "regression": (Regression, RegressionConfig),
    "autoencoder": (Autoencoder, AutoencoderConfig),
    "pretrained_encoder": (PretrainedEncoder, PretrainedEncoderConfig),
    "gan": (GAN, GANConfig),
}


def build_model(architecture: str, config: dict[str, Any] | None = None, **overrides) -> nn.Module:
    """A fresh network of ``architecture`` with its config (dict) and overrides."""
    if architecture not in ARCHITECTURES:
        raise RegistryError(f"unknown model {architecture!r}; choose from {sorted(ARCHITECTURES)}")
    cls, cfg_cls = ARCHITECTURES[architecture]
    return cls(cfg_cls(**{**(config or {}), **overrides}))


def options_for(architecture: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The subset of ``options`` that ``architecture``'s config has (so that one
    ``--set rebalance=0.85`` applies to the models that know it and leaves the rest alone)."""
    from dataclasses import fields

    known = {f.name for f in fields(ARCHITECTURES[architecture][1])}
    return {k: v for k, v in (options or {}).items() if k in known}


def save_model(root: str, name: str, model: nn.Module, card: dict[str, Any]) -> str:
    """Register ``model`` under ``name``; return the new version (sortable by time)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save_safetensors(state)
    digest = hashlib.sha256(blob).hexdigest()
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    version = f"{stamp}-{secrets.token_hex(3)}"  # sortable by time, unique even for equal weights
    path = model_dir(root, name, version)
    full = {
        "name": name,
        "version": version,
        "architecture": card.get("architecture", name),
        "config": asdict(model.config),
        "weights_sha256": digest,
        "parameters": sum(p.numel() for p in model.parameters()),
        "code_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **{k: v for k, v in card.items() if k not in ("name", "version")},
    }
    storage.atomic_write_bytes(storage.join(path, "weights.safetensors"), blob)
    storage.atomic_write_bytes(storage.join(path, "card.json"), json.dumps(full, indent=2).encode())
    return version


def ship(root: str, spec: str) -> tuple[str, str]:
    """Copy ``spec`` from ``root`` into the shipped registry and make it the champion there.
    A card without the training mean a*b* (the mean-ab baseline for datasets without a train
    split) gets it from ``root``'s features when ``root`` is the data it was trained on."""
    from models.data import train_mean_ab_of

    name, version = resolve(root, spec)
    copy_version(root, SHIPPED, name, version)
    card = load_card(root, name, version)
    index = storage.join(root, "index.parquet")
    trained_here = storage.exists(index) and (
        hashlib.sha256(storage.read_bytes(index)).hexdigest() == card.get("data_index_sha256")
    )
    if not card.get("train_mean_ab") and trained_here:
        features = storage.join(root, "features", card["backbone"], "index.parquet")
        card["train_mean_ab"] = train_mean_ab_of(features)
        url = storage.join(model_dir(SHIPPED, name, version), "card.json")
        storage.atomic_write_bytes(url, json.dumps(card, indent=2).encode())
    promote(SHIPPED, name, version, reason=f"shipped from {root}")
    return name, version


def load_model(root: str, spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """The network of ``name[@version]`` in eval mode, and its card; a name that ``root`` does
    not have comes from the models shipped with Koala."""
    root = locate(root, spec)
    name, version = resolve(root, spec)
    card = load_card(root, name, version)
    blob = storage.read_bytes(storage.join(model_dir(root, name, version), "weights.safetensors"))
    if hashlib.sha256(blob).hexdigest() != card["weights_sha256"]:
        raise RegistryError(f"{name}@{version}: weights do not match the sha256 in its card")
    try:
        model = build_model(
            card["architecture"], card["config"], **_no_download(card["architecture"])
        )
        model.load_state_dict(load_safetensors(blob))
    except Exception as exc:  # a bad header, wrong shapes or an unknown architecture
        reason = one_line(exc)
        raise RegistryError(f"{name}@{version}: cannot load its weights ({reason})") from None
    model.chroma_gain = float(card.get("chroma_gain", 1.0))  # see models/calibration.py
    return model.eval(), card


def _no_download(architecture: str) -> dict[str, Any]:
    # registered weights replace a pretrained encoder anyway: skip loading it first
    return options_for(architecture, {"pretrained": False})
