"""Where a result came from: the hardware, the library versions and the git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from dnbook import __version__

# dnbook/engine/environment.py -> the checkout (or site-packages) holding the dnbook folder
REPO_ROOT = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16) and PyTorch's oneDNN
    uses it; elsewhere bf16 is emulated and slower than float32, so the trainer keeps float32."""
    if not cpu_flags() & {"amx_bf16", "avx512_bf16"}:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def hardware() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model(),
        "cpu_bf16": sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"}),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
    }


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "dnbook": __version__,
    }


def git_commit() -> str | None:
    """The checked-out commit of the repository holding dnbook, with ``+dirty`` when tracked
    files have uncommitted changes; ``None`` outside a git checkout or before the first commit."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
