"""Where training runs and in which precision: the device, and bf16 autocast where it pays.

Uses CUDA with bf16 autocast when present, the CPU otherwise (bf16 autocast too where the CPU has
native bf16 matrix units, AMX or AVX512-BF16; fp32 elsewhere). train, bench and predict share these.
"""

from __future__ import annotations

import torch

from job.errors import UserError


def pick_device(name: str) -> torch.device:
    """--device: auto (CUDA when present), cpu or cuda."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: choose auto, cpu or cuda")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AMX, AVX512-BF16): bf16 pays there (docs/performance.md); emulated, it is slower."""
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def uses_bf16(device: torch.device, model: torch.nn.Module | None = None) -> bool:
    """bf16 autocast: always on CUDA; on a CPU with native bf16 unless the model says it does not pay."""
    return device.type == "cuda" or (cpu_has_bf16() and getattr(model, "cpu_bf16", True))


def autocast(device: torch.device, model: torch.nn.Module | None = None):
    # No cast cache: each weight is cast once per forward anyway, and a CUDA graph's capture must not
    # keep casts made outside it (torch's CUDA graphs notes ask for cache_enabled=False).
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, model), cache_enabled=False)
