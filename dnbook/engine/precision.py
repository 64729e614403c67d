"""The precision and memory layout of a run, chosen per device, and the record of them that
every result keeps (the same config runs both ways across machines): bf16 autocast where the
device computes bf16 natively (CUDA; CPUs with AMX or AVX-512 BF16) and the config allows it,
float32 elsewhere; channels_last or contiguous as the config says."""

from __future__ import annotations

from typing import Any

import torch

from dnbook.engine.config import TrainConfig
from dnbook.engine.environment import cpu_bf16_native


def choose(config: TrainConfig, device: torch.device) -> tuple[bool, torch.memory_format]:
    """``(bf16 autocast on, memory format)`` of ``config`` on ``device``."""
    native_bf16 = device.type == "cuda" or (device.type == "cpu" and cpu_bf16_native())
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return config.amp and native_bf16, memory_format


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``amp``, else a disabled one."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def record(amp: bool, memory_format: torch.memory_format, device: torch.device) -> dict[str, Any]:
    """The result's ``precision`` field."""
    return {
        "autocast": "bfloat16" if amp else None,
        "memory_format": "channels_last" if memory_format == torch.channels_last else "contiguous",
        "device": device.type,
    }
