"""The precision and memory layout of a run, chosen per device, and the record of them that
every result (and every checkpoint) keeps: the same config runs both ways across machines.

bf16 autocast runs where the config allows it and the device gains from it: CUDA, and CPUs
with AMX (``amx_bf16``) on which PyTorch's oneDNN computes bf16. A CPU with AVX-512 BF16 and no
AMX computes bf16 natively too, but there the timed whole run of BN and DN-B was not faster
under bf16 than in float32 (``results/bench/README.md``, the section on bf16 or float32), so it
runs float32, as every other CPU does. channels_last or contiguous as the config says.

A run resumed from a checkpoint keeps the precision it started in (:func:`resumed`), whatever
this machine would choose for a new run.

``DNBOOK_AUTOCAST`` overrides the rule for new runs: ``bf16`` (only where the device computes
bf16 natively) or ``off``; empty or ``auto`` keeps the rule. It exists so that the runs of one
table share a precision when they are trained on machines whose rules differ. The result's
``precision`` record says which decided (``chosen_by``).
"""

from __future__ import annotations

import os
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


AUTOCAST_ENV = "DNBOOK_AUTOCAST"
_OVERRIDES = ("auto", "bf16", "off")


def override() -> str:
    """``DNBOOK_AUTOCAST``: ``auto`` (the rule), ``bf16`` or ``off``."""
    value = os.environ.get(AUTOCAST_ENV, "").strip().lower() or "auto"
    if value not in _OVERRIDES:
        raise ValueError(f"{AUTOCAST_ENV} must be one of {', '.join(_OVERRIDES)}; got {value!r}")
    return value


def choose(config: TrainConfig, device: torch.device) -> tuple[bool, torch.memory_format]:
    """``(bf16 autocast on, memory format)`` of a new run of ``config`` on ``device``: the
    rule (:func:`bf16_pays`), or ``DNBOOK_AUTOCAST`` where set. A config with ``amp=False``
    always runs float32."""
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    forced = override()
    if forced == "bf16" and device.type == "cpu" and not cpu_bf16_native():
        raise ValueError(
            f"{AUTOCAST_ENV}=bf16 needs a CPU that computes bf16 natively (amx_bf16 or "
            f"avx512_bf16 used by oneDNN); this CPU has neither"
        )
    amp = {"auto": bf16_pays(device), "bf16": True, "off": False}[forced]
    return config.amp and amp, memory_format


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


def chosen_by() -> str:
    """What decides a new run's precision here: ``rule`` or ``DNBOOK_AUTOCAST=...``."""
    forced = override()
    return "rule" if forced == "auto" else f"{AUTOCAST_ENV}={forced}"


def record(
    amp: bool, memory_format: torch.memory_format, device: torch.device, by: str | None = None
) -> dict[str, Any]:
    """The result's ``precision`` field; ``by`` says what chose it (default :func:`chosen_by`;
    a resumed run passes its checkpoint's)."""
    return {
        "autocast": "bfloat16" if amp else None,
        "chosen_by": by or chosen_by(),
        "memory_format": "channels_last" if memory_format == torch.channels_last else "contiguous",
        "device": device.type,
    }
