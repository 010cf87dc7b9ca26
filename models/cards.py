"""The registry's cards, without torch: where ``ROOT/models/{name}/{version}/`` lives, which
versions and champions there are, and what each ``card.json`` says. Checks before a run (an
unknown model or version) use this and fail in well under a second; models/registry.py adds
the networks (building, saving and loading weights).
"""

from __future__ import annotations

import difflib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from koala import storage
from koala.errors import KoalaError

SHIPPED = "<shipped>"


class RegistryError(KoalaError):
    """An unknown model name or version, or a broken registry entry."""


#: models committed with the code (the default colorization model), used when ROOT has none
SHIPPED_REGISTRY = str(Path(__file__).resolve().parent / "shipped")


def registry_root(root: str) -> str:
    """The registry folder of a dataset root (``ROOT/models``), or the shipped one."""
    return SHIPPED_REGISTRY if root == SHIPPED else storage.join(root, "models")


def model_dir(root: str, name: str, version: str) -> str:
    return storage.join(registry_root(root), name, version)


def versions(root: str, name: str) -> list[str]:
    """Registered versions of ``name``, oldest first."""
    fs, path = storage.get_fs(storage.join(registry_root(root), name))
    if not fs.exists(path):
        return []
    return sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(path, detail=False)
        if fs.exists(f"{p.rstrip('/')}/card.json")
    )


def model_names(root: str) -> list[str]:
    """The names registered under ``root`` (empty when it has no registry)."""
    fs, path = storage.get_fs(registry_root(root))
    if not fs.exists(path):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def champion(root: str, name: str) -> str | None:
    """The champion version of ``name``, if one was promoted."""
    url = storage.join(registry_root(root), name, "champion.json")
    return json.loads(storage.read_bytes(url))["version"] if storage.exists(url) else None


def promote(root: str, name: str, version: str, reason: str = "") -> None:
    """Make ``version`` the champion of ``name``."""
    if version not in versions(root, name):
        raise RegistryError(f"cannot promote {name}@{version}: no such version")
    pointer = {
        "version": version,
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reason": reason,
    }
    url = storage.join(registry_root(root), name, "champion.json")
    storage.atomic_write_bytes(url, json.dumps(pointer, indent=2).encode())


def copy_version(src: str, dst: str, name: str, version: str) -> None:
    """Copy ``name@version`` (weights and card) from registry ``src`` to ``dst``."""
    for filename in ("weights.safetensors", "card.json"):
        blob = storage.read_bytes(storage.join(model_dir(src, name, version), filename))
        storage.atomic_write_bytes(storage.join(model_dir(dst, name, version), filename), blob)


def locate(root: str, spec: str) -> str:
    """Where ``name[@version]`` lives: ``root`` when its registry has it, else the shipped
    registry when that has it (a shipped version named outright is found even when ``root``
    holds other versions of the name), else ``root`` (whose error then says what it has)."""
    name, _, version = spec.partition("@")
    here, shipped = versions(root, name), versions(SHIPPED, name)
    if not shipped or (here and (not version or version in here)):
        return root
    return SHIPPED if not version or version in shipped else root


def resolve(root: str, spec: str) -> tuple[str, str]:
    """``name[@version]`` to (name, version): no version means the champion, else the latest."""
    name, _, version = spec.partition("@")
    known = versions(root, name)
    if not known:
        where = registry_root(root) + ("" if root == SHIPPED else " nor among the shipped models")
        close = difflib.get_close_matches(name, model_names(root) + model_names(SHIPPED), 1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RegistryError(f"no model named {name!r} in {where}{hint} (see: koala models list)")
    if not version:
        version = champion(root, name) or known[-1]
    if version not in known:
        raise RegistryError(f"model {name!r} has no version {version!r} (have: {known[-3:]})")
    return name, version


def load_card(root: str, name: str, version: str) -> dict[str, Any]:
    """The card of one registered version; a missing or broken card is a one-line error."""
    uri = storage.join(model_dir(root, name, version), "card.json")
    try:
        card = json.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        raise RegistryError(f"{name}@{version}: card.json is missing ({uri})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{name}@{version}: card.json is not valid JSON ({exc})") from None
    missing = [k for k in _CARD_KEYS if not isinstance(card, dict) or k not in card]
    if missing:
        raise RegistryError(f"{name}@{version}: card.json lacks {', '.join(missing)} ({uri})")
    return card


#: what every card must say for the model to be loaded and labelled
_CARD_KEYS = ("name", "version", "architecture", "config", "weights_sha256")


def find_card(root: str, spec: str) -> dict[str, Any]:
    """The card of ``name[@version]`` (resolved as :func:`load_model` does), checking that its
    weights exist, without building the network."""
    root = locate(root, spec)
    name, version = resolve(root, spec)
    if not storage.exists(storage.join(model_dir(root, name, version), "weights.safetensors")):
        raise RegistryError(f"{name}@{version}: weights.safetensors is missing")
    return load_card(root, name, version)


def list_models(root: str) -> pd.DataFrame:
    """One row per registered version: name, version, champion flag, created, val metrics."""
    rows = []
    for name in model_names(root):
        best = champion(root, name)
        for version in versions(root, name):
            card = load_card(root, name, version)
            rows.append(
                {
                    "name": name,
                    "version": version,
                    "champion": version == best,
                    "architecture": card.get("architecture"),
                    "created_at": card.get("created_at"),
                    **{f"val_{k}": v for k, v in card.get("val_metrics", {}).items()},
                }
            )
    return pd.DataFrame(rows)
