"""The colour judge at inference: its ONNX graph run by ONNX Runtime on one CPU thread.

The judge is trained in PyTorch (``koala.colour_judge``); what every ingest and colorize worker
runs is the same network exported to ``koala/colour_judge.onnx`` (``export_onnx``), which
ONNX Runtime fuses and runs in about half the time of PyTorch's eager mode, without importing
torch. The graph records the digest of the safetensors it was made from; the tests check that
the two agree, weights and probabilities.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from koala.errors import KoalaError

JUDGE_ONNX = Path(__file__).with_name("colour_judge.onnx")
#: the second judge, trained on other pictures, asked only when the first is near its cut
SECOND_ONNX = Path(__file__).with_name("colour_judge_second.onnx")
INPUT = "views"  #: the graph's input, (B, 5, H, W) float32 (``export_onnx`` names it)


@lru_cache(maxsize=2)
def judge_session(path: str = str(JUDGE_ONNX)):  # -> onnxruntime.InferenceSession
    """The judge's inference session, made once per process: one thread, no spinning (many
    workers each run their own)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no notices on a default run
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a missing or damaged file is an installation fault
        raise KoalaError(f"colour judge graph {path!r} cannot be loaded: {exc}") from None


def graph_metadata(path: str = str(JUDGE_ONNX)) -> dict:
    """The graph's metadata (``weights_sha256``: the safetensors it was exported from)."""
    meta = judge_session(path).get_modelmeta().custom_metadata_map
    return {k: (json.loads(v) if v.startswith("{") else v) for k, v in meta.items()}


def monochrome_probability(views: np.ndarray, graph: Path = JUDGE_ONNX) -> np.ndarray:
    """P(monochrome) for a batch of judge views (B, 5, H, W) float32, by the judge ``graph``."""
    views = np.ascontiguousarray(views, dtype=np.float32)
    (logits,) = judge_session(str(graph)).run(None, {INPUT: views})
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def symmetries(view: np.ndarray) -> np.ndarray:
    """(4, C, H, W): one square view (C, H, W) as it is, flipped each way and transposed (the
    judges were trained with flips and quarter turns: their answer should not depend on it)."""
    return np.stack([view, view[:, :, ::-1], view[:, ::-1, :], view.transpose(0, 2, 1)])


def second_opinion(view: np.ndarray, first: float | None = None) -> float:
    """P(monochrome) of one view (C, H, W) by both judges, each on the view's four
    :func:`symmetries`: the mean of the eight probabilities. ``first``: the first judge's
    probability of the view as it is, when already known (it is not computed again)."""
    views = symmetries(view)
    if first is None:
        firsts = monochrome_probability(views)
    else:  # the view as it is was judged already: only its three symmetries are new
        firsts = np.append(monochrome_probability(views[1:]), first)
    return float((firsts.mean() + monochrome_probability(views, SECOND_ONNX).mean()) / 2)
