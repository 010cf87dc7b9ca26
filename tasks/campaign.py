"""The colour campaign's record: after each leg of a long training (``koala train
--total-samples N --leg-minutes M --checkpoint-dir DIR [--resume]``), the best model so far
is scored on fixed evaluation sets and becomes one point of the curve of quality against
CPU-hours (a JSON list and a PNG kept in the repository, so the record survives a lost
machine), and its weights are kept as the restart point: bf16, one at a time.

On-disk formats:
- ``curve.json``: a list of points, one per leg (a later record of the same version replaces
  it): ``version``, ``legs``, ``samples``, ``wall_hours``, ``cpu_hours``, ``recorded_at`` and
  per evaluation set ``{psnr, gray_psnr, gain_db, colourfulness_ratio, fd_lite0, images}``;
  reference models (``reference: true``, e.g. the shipped flagship) are drawn as lines.
- restart folder: ``card.json`` (the model's card) and ``weights.bf16.safetensors``
  (floating-point tensors in bfloat16); ``koala models import`` registers it again.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from koala import storage

#: the baseline every gain is measured against (tasks/evaluate.py's gray input)
GRAY = "gray"


def cpu_hours(card: dict[str, Any]) -> float:
    """CPU-hours of all legs: each leg's wall hours times the threads it trained on (a card
    from before campaigns: its training hours times the threads its hardware line names)."""
    if legs := card.get("legs"):
        return sum(leg["hours"] * leg.get("threads", 1) for leg in legs)
    threads = re.search(r"(\d+) threads", card.get("hardware", ""))
    return card.get("training_seconds", 0.0) / 3600 * (int(threads[1]) if threads else 1)


def leg_point(card: dict[str, Any], summaries: dict[str, dict], reference: bool = False) -> dict:
    """One point of the curve: ``card``'s model as scored in each evaluation summary
    (``{set name: summary.json of koala evaluate}``)."""
    spec = f"{card['name']}@{card['version']}"
    point: dict[str, Any] = {
        "version": spec,
        "reference": reference,
        "legs": len(card.get("legs", [])),
        "samples": card.get("training_samples"),
        "wall_hours": round(card.get("training_seconds", 0.0) / 3600, 3),
        "cpu_hours": round(cpu_hours(card), 3),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name, summary in summaries.items():
        model = summary.get(spec) or next(v for k, v in summary.items() if k.startswith(spec))
        gray = summary[GRAY]
        point[name] = {
            "psnr": round(model["psnr"], 3),
            "gray_psnr": round(gray["psnr"], 3),
            "gain_db": round(model["psnr"] - gray["psnr"], 3),
            "colourfulness_ratio": round(model["colourfulness_ratio"], 3),
            "fd_lite0": round(model["fd_lite0"], 2),
            "images": model["images"],
        }
    return point


def read_curve(path: str) -> list[dict]:
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else []


def record_point(path: str, point: dict) -> list[dict]:
    """Add ``point`` to the curve at ``path`` (replacing an earlier record of its version);
    atomic; returns the curve."""
    curve = [p for p in read_curve(path) if p["version"] != point["version"]] + [point]
    curve.sort(key=lambda p: (not p.get("reference"), p["cpu_hours"]))
    storage.atomic_write_bytes(path, json.dumps(curve, indent=2).encode())
    return curve


def plot_curve(curve: list[dict], png: str) -> str:
    """Gain over gray (dB) and colourfulness ratio against CPU-hours, per evaluation set;
    reference models as dashed lines; the targets (+1.0 dB, 0.85) dotted."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({k for p in curve for k, v in p.items() if isinstance(v, dict)})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    metrics = (
        ("gain_db", "PSNR gain over gray (dB)", 1.0),
        ("colourfulness_ratio", "colourfulness / truth's", 0.85),
    )
    for ax, (key, label, target) in zip(axes, metrics, strict=True):
        for i, name in enumerate(sets):
            colour = f"C{i}"
            legs = [p for p in curve if not p.get("reference") and name in p]
            ax.plot(
                [p["cpu_hours"] for p in legs],
                [p[name][key] for p in legs],
                "o-",
                color=colour,
                label=f"campaign, {name}",
            )
            for ref in (p for p in curve if p.get("reference") and name in p):
                ax.axhline(
                    ref[name][key],
                    color=colour,
                    ls="--",
                    lw=1,
                    label=f"{ref['version'].split('@')[0]} shipped, {name}",
                )
        ax.axhline(target, color="k", ls=":", lw=1, label="target")
        ax.set_xlim(left=0)
        ax.set_xlabel("training CPU-hours (wall hours x threads)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Colour campaign: quality against training compute")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    storage.atomic_write_bytes(png, buf.getvalue())
    return png


def export_restart(root: str, spec: str, folder: str) -> str:
    """Keep ``spec``'s weights (bf16) and card in ``folder``, replacing the previous ones:
    what a campaign restarts from when its checkpoint folder is gone."""
    import torch
    from safetensors.torch import load as load_safetensors
    from safetensors.torch import save as save_safetensors

    from models.cards import load_card, locate, model_dir, resolve

    root = locate(root, spec)
    name, version = resolve(root, spec)
    card = load_card(root, name, version)
    blob = storage.read_bytes(storage.join(model_dir(root, name, version), "weights.safetensors"))
    state = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v
        for k, v in load_safetensors(blob).items()
    }
    storage.atomic_write_bytes(
        storage.join(folder, "weights.bf16.safetensors"), save_safetensors(state)
    )
    storage.atomic_write_bytes(
        storage.join(folder, "card.json"), json.dumps(card, indent=2).encode()
    )
    return folder


def import_restart(folder: str, root: str) -> str:
    """Register the restart point kept in ``folder`` (see :func:`export_restart`) in
    ``root``'s registry, in float32; returns ``name@version`` for ``--init-from``."""
    import torch
    from safetensors.torch import load as load_safetensors

    from models.registry import build_model, save_model

    card = json.loads(storage.read_bytes(storage.join(folder, "card.json")))
    blob = storage.read_bytes(storage.join(folder, "weights.bf16.safetensors"))
    state = {
        k: v.float() if v.is_floating_point() else v for k, v in load_safetensors(blob).items()
    }
    model = build_model(card["architecture"], card["config"], pretrained=False)
    model.load_state_dict(state)
    model.chroma_gain = float(card.get("chroma_gain", 1.0))
    derived = ("name", "version", "weights_sha256", "created_at", "config", "parameters")
    extra = {k: v for k, v in card.items() if k not in derived}
    extra["restored_from"] = f"{card['name']}@{card['version']} (bf16 restart point)"
    with torch.no_grad():
        version = save_model(root, card["name"], model, extra)
    return f"{card['name']}@{version}"
