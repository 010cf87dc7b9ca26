"""Where models run: device choice and CPU threads."""

from __future__ import annotations

import os

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
