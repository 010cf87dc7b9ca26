"""Champion / challenger: decide whether a newly trained model replaces the champion, and keep
the decision in the registry (``ROOT/models/{name}/{challenger}/promotion.json``)."""

from __future__ import annotations

import json
import time
from typing import Any

from koala import storage
from koala.metrics import HIGHER_IS_BETTER
from models.registry import (
    SHIPPED,
    copy_version,
    locate,
    model_dir,
    promote,
    resolve,
    versions,
)


def current_champion(root: str, name: str) -> str | None:
    """The version colorization uses today: ``root``'s champion (or latest), else the shipped
    one copied into ``root``'s registry so that both contenders live in one place. None when
    there is no model of that name anywhere."""
    where = locate(root, name)
    if not versions(where, name):
        return None
    _, version = resolve(where, name)
    if where == SHIPPED:
        copy_version(SHIPPED, root, name, version)
        promote(root, name, version, reason="adopted the model shipped with Koala")
    return version


def decide(
    scores: dict[str, dict[str, float]],
    champion_spec: str | None,
    challenger_spec: str,
    metric: str,
    margin: float,
) -> dict[str, Any]:
    """Whether the challenger beats the champion on ``metric`` by at least ``margin`` (in the
    metric's units, in its better direction); no champion means promote."""
    higher = metric in HIGHER_IS_BETTER
    new = scores[challenger_spec][metric]
    old = scores[champion_spec][metric] if champion_spec else None
    gain = None if old is None else (new - old if higher else old - new)
    promoted = gain is None or gain >= margin
    return {
        "metric": metric,
        "higher_is_better": higher,
        "margin": margin,
        "challenger": challenger_spec,
        "challenger_score": new,
        "champion": champion_spec,
        "champion_score": old,
        "improvement": gain,
        "promoted": promoted,
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def record_decision(root: str, name: str, version: str, decision: dict[str, Any]) -> None:
    """Write the decision next to the challenger and promote it when it won."""
    path = storage.join(model_dir(root, name, version), "promotion.json")
    storage.atomic_write_bytes(path, json.dumps(decision, indent=2).encode())
    if decision["promoted"]:
        old = decision["champion"] or "none"
        promote(
            root,
            name,
            version,
            reason=f"{decision['metric']} {decision['challenger_score']:.4g} vs {old} "
            f"{decision['champion_score'] if decision['champion_score'] is not None else '-'}",
        )
