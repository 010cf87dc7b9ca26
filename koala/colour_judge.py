"""The colour judge: a small CNN that tells a colour photograph from a monochrome print.

Toned, stained, foxed, cracked, annotated and stamped monochrome prints carry colour that does
not follow the picture; a faded or hand-tinted colour photograph carries weak colour that does.
The last step of the monochrome cascade (``koala.monochrome``) asks the judge about the pictures
its clear cases do not settle: it looks at a 96x96 view of the picture apart from its surround,
in CIE Lab plus its chroma beyond the lightness-conditional tint (``koala.monochrome.judge_view``)
and gives the probability that the picture is monochrome.

Its weights ship with Koala (``koala/colour_judge.safetensors``, about 1 MB, never unpickled),
with a second judge's (``colour_judge_second.safetensors``: the same network trained on other
pictures, asked near the first's cut); ``bench/train_colour_judge.py`` is the recipe that made
them and
``docs/monochrome-calibration.md`` reports how well they do.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from koala.choices import JUDGE_CHANNELS, JUDGE_SIDE
from koala.errors import KoalaError
from koala.judge_runtime import INPUT, JUDGE_ONNX, SECOND_ONNX

JUDGE_WEIGHTS = Path(__file__).with_name("colour_judge.safetensors")
#: the second judge (same network, other training pictures), asked near the first's cut
SECOND_WEIGHTS = Path(__file__).with_name("colour_judge_second.safetensors")
#: each judge's weights and the ONNX graph inference runs
JUDGES = ((JUDGE_WEIGHTS, JUDGE_ONNX), (SECOND_WEIGHTS, SECOND_ONNX))


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ColourJudge(nn.Module):
    """(B, 5, H, W) judge views -> (B,) logits of "monochrome"."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _stage(JUDGE_CHANNELS, w, 2),
            _stage(w, w, 1),
            _stage(w, 2 * w, 2),
            _stage(2 * w, 2 * w, 1),
            _stage(2 * w, 3 * w, 2),
            _stage(3 * w, 4 * w, 2),
            _stage(4 * w, 5 * w, 1),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(10 * w, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        return self.head(pooled)[:, 0]


def save_judge(model: ColourJudge, path: Path, meta: dict) -> None:
    """Weights as safetensors with the recipe and results as string metadata."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"koala": json.dumps(meta)})


@lru_cache(maxsize=2)
def load_judge(path: str = str(JUDGE_WEIGHTS)) -> ColourJudge:
    """The trained judge in eval mode, from its safetensors (loaded once per process)."""
    try:
        state = load_file(path)
        model = ColourJudge()
        model.load_state_dict(state)
    except Exception as exc:  # a missing or damaged file is an installation fault
        raise KoalaError(f"colour judge weights {path!r} cannot be loaded: {exc}") from None
    return model.eval()


def weights_digest(path: Path = JUDGE_WEIGHTS) -> str:
    """SHA-256 of the judge's safetensors: the ONNX graph records the weights it was made from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_onnx(weights: Path = JUDGE_WEIGHTS, out: Path = JUDGE_ONNX) -> Path:
    """Write the judge of ``weights`` as the ONNX graph that inference runs
    (``koala.judge_runtime``), batch size free, with the weights' digest in its metadata."""
    import onnx  # the export needs onnx and onnxscript (``pip install .[bench]``)

    model = load_judge(str(weights))
    example = (torch.zeros(1, JUDGE_CHANNELS, JUDGE_SIDE, JUDGE_SIDE),)
    program = torch.onnx.export(
        model,
        example,
        input_names=[INPUT],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        dynamo=True,
        optimize=True,
    )
    graph = program.model_proto
    entry = graph.metadata_props.add()
    entry.key, entry.value = "weights_sha256", weights_digest(weights)
    tmp = out.with_suffix(".tmp")
    onnx.save(graph, str(tmp))
    tmp.replace(out)
    return out
