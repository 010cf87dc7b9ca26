"""Where models run: device choice and CPU threads."""

from __future__ import annotations

import os
import platform

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
    """CPU cores this process should use: its Dask worker's threads, else every core."""
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError):
        return max(1, os.cpu_count() or 1)


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (to the worker's cores by default) and return the number."""
    n = n or worker_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


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
