"""Device and precision choices, made once at the edge and passed down explicitly."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX); elsewhere bf16 is slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` in {'auto', 'bf16', 'fp32'}; None means plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if device.type == "cuda":
        # Native only: pre-Ampere GPUs emulate bf16, slower than fp32.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def samples_per_pass(requested: int, device: torch.device) -> int:
    """MC samples stacked in one forward pass; 0 picks what measured fastest on each device.

    On a CPU a batch of several full-size images falls out of cache and is slower per sample
    than one at a time (bench/README.md); a GPU needs the batch to be busy.
    """
    if requested > 0:
        return requested
    return 10 if device.type == "cuda" else 1
