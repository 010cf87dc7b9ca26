"""The fair comparison's report parts: which split is scored, what the data and the hardware
were, the training summary and the training curves as images (the evaluation table and sample
grid are ``koala evaluate``'s, see tasks/evaluate.py)."""

from __future__ import annotations

import html
import io

from koala import storage
from koala.errors import KoalaError
from models.config import FLAGSHIP
from models.runtime import hardware

#: every model of the comparison: the papers' models, then Koala's own flagship
COMPARED = (
    "koalarization",
    "zhang",
    "zhang_resnet",
    "regression",
    "autoencoder",
    "pretrained_encoder",
    "gan",
    FLAGSHIP,
)


def split_counts(root: str, backbone: str) -> dict[str, int]:
    """Feature samples per split."""
    url = storage.join(root, "features", backbone, "index.parquet")
    if not storage.exists(url):
        raise KoalaError(f"no features index at {url} (run koala preprocess first)")
    index = storage.read_parquet(url, columns=["split"])
    return {str(k): int(v) for k, v in index["split"].value_counts().sort_index().items()}


def scored_split(counts: dict[str, int], split: str) -> tuple[str, str]:
    """The split to score and a note on it: ``split`` when it has samples; else ``val``, which
    early stopping and calibration also saw (said in the report)."""
    if counts.get(split):
        return split, ""
    if split == "test" and counts.get("val"):
        return "val", (
            "This dataset has no test split, so the val split is scored; early stopping and "
            "chroma calibration also used it, so every model's numbers are slightly optimistic."
        )
    raise KoalaError(f"the dataset has no {split!r} samples (splits: {counts})")


def plot_curves(cards: dict[str, dict], path: str) -> None:
    """``curves.png``: val PSNR against training time for all models, and each model's losses
    per epoch (GAN: D and G terms too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(cards) + cols - 1) // cols
    fig = plt.figure(figsize=(4 * cols, 3.6 + 3.0 * rows), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.6, 3.0 * rows])
    ax = top.subplots()
    for name, card in cards.items():
        h = card.get("history", [])
        ax.plot([e["seconds"] for e in h], [e["val_psnr"] for e in h], "o-", label=name)
    ax.set(xlabel="training seconds", ylabel="val PSNR (dB)", title="val PSNR during training")
    ax.legend(fontsize=8, ncol=4)
    axes = bottom.subplots(rows, cols, squeeze=False).flatten()
    for ax, (name, card) in zip(axes, cards.items(), strict=False):
        h = card.get("history", [])
        epochs = [e["epoch"] for e in h]
        extra = {k for e in h for k in e if k.startswith("train_") and k != "train_loss"}
        for key in ["train_loss", "val_loss", *sorted(extra)]:
            ax.plot(epochs, [e.get(key) for e in h], "o-", label=key, markersize=3)
        optimizers = ", ".join(card.get("optimizers", {}).values())
        ax.set(title=f"{name} ({optimizers})", xlabel="epoch")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in axes[len(cards) :]:
        ax.set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    storage.atomic_write_bytes(path, buf.getvalue())


def colour_setting(card: dict) -> str:
    """How a model's colour was calibrated: its decoding's prior correction, or its gain."""
    alpha = (card.get("config") or {}).get("prior_correction")
    if alpha is not None:
        return f"prior correction {alpha:.2f}"
    return f"gain {card.get('chroma_gain', 1.0):.2f}"


def training_table(cards: dict[str, dict]) -> str:
    """HTML table: per model its epochs, best epoch, training seconds, parameters, gain."""
    head = "".join(
        f"<th>{c}</th>"
        for c in ("model", "version", "epochs", "best epoch", "seconds", "parameters", "colour")
    )
    rows = ""
    for name, card in cards.items():
        flag = " (Koala's flagship)" if name == FLAGSHIP else ""
        rows += (
            f"<tr><th>{html.escape(name + flag)}</th><td>{html.escape(card['version'])}</td>"
            f"<td>{card['epochs_run']}</td><td>{card['best_epoch']}</td>"
            f"<td>{card['training_seconds']:.0f}</td><td>{card['parameters'] / 1e6:.1f} M</td>"
            f"<td>{colour_setting(card)}</td></tr>"
        )
    return f"<table><tr>{head}</tr>{rows}</table>"


def intro_html(
    root: str,
    counts: dict[str, int],
    split: str,
    note: str,
    budget_minutes: float,
    colour_target: float | None,
    batch_size: int,
    patience: int | None = None,
) -> str:
    """What was compared, on what, under which budget and on which machine."""
    stopping = (
        f"early stopping after {patience} epochs without val improvement"
        if patience
        else "no early stopping"
    )
    calibration = (
        f"then each model was calibrated on val (prior correction of its colour distribution, "
        f"else a chroma "
        f"gain) to a colourfulness of "
        f"{colour_target:g} of the ground truth's (models/calibration.py)"
        if colour_target
        else "no chroma calibration"
    )
    splits = ", ".join(f"{k} {v}" for k, v in counts.items())
    return (
        f"<p><b>Budget:</b> {budget_minutes:g} wall-clock minutes of training per model, one "
        f"model at a time, batch size {batch_size}, {stopping}, the best val epoch registered; "
        f"{html.escape(calibration)}.<br><b>Data:</b> {html.escape(root)} ({splits}); "
        f"scored on the <b>{html.escape(split)}</b> split at full resolution. "
        f"{html.escape(note)}<br><b>Hardware:</b> {html.escape(hardware())}</p>"
    )
