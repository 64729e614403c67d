"""The trainer's choice of precision per device, and a resumed run keeping its own."""

from __future__ import annotations

import pytest
import torch

from dnbook.engine import precision
from dnbook.engine.config import TrainConfig

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
BF16 = {"autocast": "bfloat16", "memory_format": "channels_last", "device": "cpu"}
FLOAT32 = {"autocast": None, "memory_format": "channels_last", "device": "cpu"}


def _cpu(monkeypatch, flags: set[str], onednn_bf16: bool = True) -> None:
    """Pretend this CPU has ``flags`` (and oneDNN bf16 where ``onednn_bf16``)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(
        precision,
        "cpu_bf16_native",
        lambda: onednn_bf16 and bool(flags & {"amx_bf16", "avx512_bf16"}),
    )


@pytest.mark.parametrize(
    ("flags", "onednn_bf16", "expected"),
    [
        ({"amx_bf16", "avx512_bf16"}, True, True),  # AMX: bf16
        ({"amx_bf16"}, False, False),  # AMX that oneDNN does not use: float32
        ({"avx512_bf16"}, True, False),  # AVX-512 BF16 without AMX: float32 (results/bench)
        ({"avx2"}, True, False),  # no native bf16: float32
    ],
)
@pytest.mark.parametrize("amp", [True, False])
def test_cpu_runs_bf16_only_with_amx(monkeypatch, flags, onednn_bf16, expected, amp):
    _cpu(monkeypatch, flags, onednn_bf16)
    chosen, memory_format = precision.choose(TrainConfig(amp=amp), CPU)
    assert chosen is (expected and amp)
    assert memory_format == torch.channels_last


@pytest.mark.parametrize("amp", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_cuda_runs_bf16_where_the_config_allows(monkeypatch, amp, channels_last):
    _cpu(monkeypatch, set())
    chosen, memory_format = precision.choose(
        TrainConfig(amp=amp, channels_last=channels_last), CUDA
    )
    assert chosen is amp
    assert memory_format == (torch.channels_last if channels_last else torch.contiguous_format)


def _resume(recorded, chosen, expected, warning):
    """``precision.resumed`` of a CPU run; a warning matching ``warning`` is required exactly
    when the precision resumed in differs from the one a new run would choose."""
    if chosen == expected:
        return precision.resumed(TrainConfig(), CPU, recorded, chosen)
    with pytest.warns(UserWarning, match=warning):
        return precision.resumed(TrainConfig(), CPU, recorded, chosen)


@pytest.mark.parametrize(("recorded", "expected"), [(BF16, True), (FLOAT32, False)])
@pytest.mark.parametrize("chosen", [True, False])
def test_a_resumed_run_keeps_its_recorded_precision(recorded, expected, chosen):
    amp = _resume(recorded, chosen, expected, warning="as its checkpoint's record")
    assert amp is expected


@pytest.mark.parametrize(
    ("flags", "expected"), [({"avx512_bf16"}, True), ({"amx_bf16"}, True), ({"avx2"}, False)]
)
def test_a_checkpoint_without_a_record_resumes_under_the_rule_it_was_written_under(
    monkeypatch, flags, expected
):
    """Before checkpoints recorded the precision, every CPU with native bf16 ran bf16."""
    _cpu(monkeypatch, flags)
    chosen, _ = precision.choose(TrainConfig(), CPU)
    amp = _resume(None, chosen, expected, warning="the checkpoint has no record")
    assert amp is expected
    assert precision.resumed(TrainConfig(amp=False), CPU, None, False) is False


@pytest.mark.parametrize(
    ("setting", "flags", "expected"),
    [
        ("bf16", {"avx512_bf16"}, True),  # the rule says float32; the override says bf16
        ("off", {"amx_bf16"}, False),  # the rule says bf16; the override says float32
        ("auto", {"avx512_bf16"}, False),
        ("", {"amx_bf16"}, True),
    ],
)
def test_dnbook_autocast_overrides_the_rule_and_is_recorded(monkeypatch, setting, flags, expected):
    _cpu(monkeypatch, flags)
    monkeypatch.setenv(precision.AUTOCAST_ENV, setting)
    chosen, memory_format = precision.choose(TrainConfig(), CPU)
    assert chosen is expected
    assert precision.choose(TrainConfig(amp=False), CPU)[0] is False
    by = precision.record(chosen, memory_format, CPU)["chosen_by"]
    assert by == ("rule" if setting in ("", "auto") else f"DNBOOK_AUTOCAST={setting}")


@pytest.mark.parametrize(("setting", "flags"), [("bf16", {"avx2"}), ("fp16", {"amx_bf16"})])
def test_dnbook_autocast_refuses_what_it_cannot_do(monkeypatch, setting, flags):
    _cpu(monkeypatch, flags)
    monkeypatch.setenv(precision.AUTOCAST_ENV, setting)
    with pytest.raises(ValueError, match="DNBOOK_AUTOCAST"):
        precision.choose(TrainConfig(), CPU)
