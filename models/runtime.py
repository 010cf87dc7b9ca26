"""Where models run: device choice and CPU threads."""

from __future__ import annotations

import copy
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from koala.settings import get_settings


def resolve_device(device: str | None = None) -> torch.device:
    """``auto`` (the default, from ``KOALA_DEVICE``) picks CUDA when present, else the CPU."""
    name = device or get_settings().device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible")
    return torch.device(name)


def worker_threads() -> int:
    """CPU cores this process should use: its Dask worker's threads, else every core it may run
    on (its CPU affinity: ``taskset``, a container's cpuset)."""
    if "distributed" in sys.modules:  # not imported: this is no Dask worker (and stays light)
        from distributed import get_worker

        try:
            return max(1, get_worker().state.nthreads)
        except ValueError:
            pass
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (to the worker's cores by default) and return the number."""
    n = n or worker_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a moment: small forwards (probes) run as fast on one, and do not
    stall when another process holds the other cores (a Prefect server starting beside)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fast_cpu_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for inference: ``auto`` is float16 on CUDA, bfloat16 on a CPU that
    runs it natively (3x faster here, a*b* within 1 unit of float32), else none (float32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if fast_cpu_bf16() else None


def inference_mode(device: torch.device, precision: str = "auto"):
    """``torch.inference_mode`` plus autocast at :func:`inference_dtype` (when there is one)."""
    import contextlib

    dtype = inference_dtype(device, precision)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if dtype is not None:
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
    return stack


#: the layers whose weights autocast casts to its dtype on every call
AUTOCAST_LAYERS = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose2d,
    torch.nn.Linear,
)


def precast_for_autocast(module: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """Store the weights of ``module``'s convolutions and linear layers in ``dtype``, in place.

    Under ``torch.autocast`` at ``dtype`` those layers cast their weights on every call (a
    fifth of chroma_unet's CPU forward); pre-cast, the cast is a no-op and outputs are
    bit-identical. Only for modules that always run under that autocast; ``None`` does
    nothing."""
    if dtype is not None:
        for layer in module.modules():
            if isinstance(layer, AUTOCAST_LAYERS):
                layer.to(dtype)
    return module


def fold_batchnorm(
    module: torch.nn.Module, run: Callable[[torch.nn.Module], torch.Tensor]
) -> tuple[torch.nn.Module, int]:
    """A copy of eval-mode ``module`` in which every ``BatchNorm2d`` that reads a
    convolution's output is folded into that convolution's weights and bias, and how many
    were folded; ``module`` itself is untouched (the copy is returned even with 0).

    ``run(m)`` makes one representative forward of ``m``. Forward hooks record which batch
    norm reads which convolution's output tensor, so only real conv->BN edges fold, however
    the module's code calls its layers. A batch norm costs a pass over its activations (and,
    under CPU autocast, two dtype copies); folded, it costs nothing. The outputs of ``run``
    before and after must agree to float32 rounding, else the copy is left unfolded (0)."""
    names = {m: n for n, m in module.named_modules()}
    produced: dict[int, str] = {}
    kept: list[torch.Tensor] = []  # outputs stay alive during the run, so ids are not reused
    reads: dict[str, set[str | None]] = {}

    def after_conv(conv, _inputs, out):
        produced[id(out)] = names[conv]
        kept.append(out)

    def before_bn(bn, inputs):
        reads.setdefault(names[bn], set()).add(produced.get(id(inputs[0])))

    hooks = [
        m.register_forward_hook(after_conv)
        if isinstance(m, _CONVS)
        else m.register_forward_pre_hook(before_bn)
        for m in module.modules()
        if isinstance(m, (*_CONVS, torch.nn.BatchNorm2d)) and m in names
    ]
    try:
        with torch.inference_mode():
            before = run(module).float()
    finally:
        for h in hooks:
            h.remove()
        kept.clear()
    by_conv: dict[str, list[str]] = {}
    for bn, convs in reads.items():
        if len(convs) == 1 and None not in convs:  # always the same convolution's output
            by_conv.setdefault(next(iter(convs)), []).append(bn)
    edges = [(conv, bns[0]) for conv, bns in by_conv.items() if len(bns) == 1]
    folded = copy.deepcopy(module)
    for conv, bn in edges:
        norm = folded.get_submodule(bn)
        if norm.training or not norm.track_running_stats:
            continue
        _fold_into(folded.get_submodule(conv), norm)
        parent, _, attr = bn.rpartition(".")
        setattr(folded.get_submodule(parent), attr, torch.nn.Identity())
    with torch.inference_mode():
        after = run(folded).float()
    scale = float(before.abs().max().clamp_min(1e-6))
    if not torch.allclose(before, after, rtol=0, atol=1e-3 * scale):
        return copy.deepcopy(module), 0
    return folded, len(edges)


_CONVS = (torch.nn.Conv2d,)


@torch.no_grad()
def _fold_into(conv: torch.nn.Module, bn: torch.nn.BatchNorm2d) -> None:
    """conv's weight and bias := those of bn(conv(x)), bn in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    w = conv.weight
    bias = shift if conv.bias is None else conv.bias * scale + shift
    w.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))).to(w))
    conv.bias = torch.nn.Parameter(bias.to(w), requires_grad=False)


def hardware() -> str:
    """CPU model and cores, memory, GPU and torch version, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {gpu}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
