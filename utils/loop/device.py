"""Device and precision choices, made once at the edge and passed down explicitly."""

from __future__ import annotations

import platform
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.config import ConfigError
from utils.text import counted


def pick_device(device: str = "auto") -> torch.device:
    """``device`` as torch's; a GPU that this machine does not have is refused in one line."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (chosen.index or 0) >= count:
            has = counted(count, "CUDA GPU") if count else "no CUDA GPU"
            raise ConfigError(
                f"device={device}, but torch sees {has} on this machine; use device=auto, cpu, or "
                "a GPU it has"
            )
    return chosen


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


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), or the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def describe_machine(device: torch.device, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What a run's numbers depend on besides its config and seed. Kernels sum in other orders
    on other instruction sets and thread counts, and bf16 rounds differently with and without
    native units, so a run is bitwise only where all of these agree (docs/reproducibility.md)."""
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_fast_bf16(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "precision": str(amp_dtype or torch.float32).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
