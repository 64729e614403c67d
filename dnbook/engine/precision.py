"""The precision and memory layout of a run, chosen per device, and the record of them that
every result (and every checkpoint) keeps: the same config runs both ways across machines.

bf16 autocast runs where the config allows it and the device gains from it: CUDA, and CPUs
with AMX (``amx_bf16``) on which PyTorch's oneDNN computes bf16. A CPU with AVX-512 BF16 and no
AMX computes bf16 natively too, but there the timed whole run of BN and DN-B was not faster
under bf16 than in float32 (``results/bench/README.md``, the section on bf16 or float32), so it
runs float32, as every other CPU does. channels_last or contiguous as the config says.

A run resumed from a checkpoint keeps the precision it started in (:func:`resumed`), whatever
this machine would choose for a new run.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from dnbook.engine.config import TrainConfig
from dnbook.engine.environment import cpu_bf16_native, cpu_flags


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 autocast is the faster precision for a run on ``device``: CUDA, or a CPU
    with AMX whose bf16 PyTorch's oneDNN uses."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and "amx_bf16" in cpu_flags() and cpu_bf16_native()


def choose(config: TrainConfig, device: torch.device) -> tuple[bool, torch.memory_format]:
    """``(bf16 autocast on, memory format)`` of a new run of ``config`` on ``device``."""
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return config.amp and bf16_pays(device), memory_format


def _chosen_before_records(config: TrainConfig, device: torch.device) -> bool:
    """The autocast choice of the rule in force when checkpoints did not record it: bf16 on
    CUDA and on every CPU with native bf16 (AMX or AVX-512 BF16)."""
    native = device.type == "cuda" or (device.type == "cpu" and cpu_bf16_native())
    return config.amp and native


def resumed(
    config: TrainConfig, device: torch.device, recorded: dict[str, Any] | None, chosen: bool
) -> bool:
    """bf16 autocast on or off for a run resumed from a checkpoint whose precision record is
    ``recorded`` (``None``: a checkpoint written before checkpoints kept one, whose precision
    was the older rule's on this machine); ``chosen`` is what a new run would use. A resumed
    run keeps its own precision; a warning says so where that differs from ``chosen``."""
    if recorded is None:
        amp = _chosen_before_records(config, device)
        origin = "the rule in force when it was written (the checkpoint has no record)"
    else:
        amp = recorded.get("autocast") == "bfloat16"
        origin = "its checkpoint's record"
    if amp != chosen:
        names = {True: "bf16 autocast", False: "float32"}
        warnings.warn(
            f"resuming in {names[amp]}, as {origin}; a new run here would use {names[chosen]}",
            stacklevel=2,
        )
    return amp


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
