"""Turning a NaN into a finding: cheap detection every step, a careful look only on failure.

Every step pays for one fused reduction (the global gradient norm) and one host sync, shared
with reading the loss. Only when the loss or the gradient norm is non-finite does the trainer
call :func:`locate_nonfinite`, which replays that batch once with hooks on every module and
names the first module whose output, or else whose input gradient, or else whose parameter's
gradient went non-finite. If none did, every value was finite and only their global norm
overflowed; the replay's norm says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn


def grad_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of all gradients: one fused reduction, non-finite if any entry is."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def _tensors(value: object) -> Iterator[torch.Tensor]:
    """The floating-point tensors inside a module's input or output (tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _is_nonfinite(tensors: Iterable[torch.Tensor]) -> bool:
    return any(not bool(torch.isfinite(t).all()) for t in tensors)


def _first_consumer(names: list[str]) -> str:
    """Among the modules that received one tensor as input (in call order), the innermost
    module of the first call chain: ``["layer1.0", "layer1.0.conv1", "layer1.0.down"]`` ->
    ``"layer1.0.conv1"``. A parent and its first child share their input tensor."""
    name = names[0]
    for later in names[1:]:
        if later.startswith(name + ".") or name == "":
            name = later
        else:
            break
    return name


def locate_nonfinite(
    model: nn.Module, loss_of_batch: Callable[[], torch.Tensor]
) -> dict[str, dict[str, str] | None]:
    """Replay one batch with hooks and find where the first non-finite value appeared.

    Args:
        model: the model whose modules get the hooks (unwrap DDP before passing it).
        loss_of_batch: runs the forward pass (through whatever wrapper trains the model) on
            the offending batch and returns the loss; this function calls ``backward`` on it.

    Returns:
        ``{"forward": ..., "backward": ..., "parameter": ..., "first": ..., "grad_norm": ...}``.
        ``forward`` names the first module, in order of completion, whose output holds a NaN
        or an infinity (inner modules finish before their parents, so this is the innermost
        culprit); ``backward`` names the first module, in backward order, whose input
        gradient is non-finite (a tensor feeding several modules gets their summed gradient
        and is reported under its first consumer); ``parameter`` names the first module, in
        registration order, one of whose own parameters got a non-finite gradient (a weight
        gradient can overflow while every input gradient stays finite). Each is
        ``{"module": name, "type": class name, "where": "output"|"grad"|"parameter grad"}``
        or ``None``; ``first`` is the first of them that is set. ``grad_norm`` is the replay's
        global gradient norm (infinite when finite gradients overflow their norm).
    """
    found: dict[str, dict[str, str] | None] = {"forward": None, "backward": None, "parameter": None}
    modules = dict(model.named_modules())
    # id(input tensor) -> (the tensor, kept alive so its id stays unique; its consumers)
    consumers: dict[int, tuple[torch.Tensor, list[str]]] = {}
    handles = []

    def record(where: str, name: str) -> None:
        key = {"output": "forward", "grad": "backward"}.get(where, "parameter")
        if found[key] is None:
            label = name or type(model).__name__
            found[key] = {"module": label, "type": type(modules[name]).__name__, "where": where}

    def watch_output(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if found["forward"] is None and _is_nonfinite(_tensors(output)):
                record("output", name)

        return hook

    def watch_input_grad(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple) -> None:
            for tensor in _tensors(inputs):
                if not tensor.requires_grad:
                    continue
                names = consumers.setdefault(id(tensor), (tensor, []))[1]
                if not names:  # one gradient hook per tensor, whoever consumes it first
                    tensor.register_hook(grad_hook(names))
                names.append(name)

        return hook

    def grad_hook(names: list[str]) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            if found["backward"] is None and _is_nonfinite([grad]):
                record("grad", _first_consumer(names))

        return hook

    for name, module in modules.items():
        handles.append(module.register_forward_hook(watch_output(name)))
        handles.append(module.register_forward_pre_hook(watch_input_grad(name)))
    try:
        model.zero_grad(set_to_none=True)
        loss = loss_of_batch()
        loss.backward()
        for name, module in modules.items():
            own = [p.grad for p in module.parameters(recurse=False) if p.grad is not None]
            if _is_nonfinite(own):
                record("parameter grad", name)
                break
        norm = float(grad_norm(model.parameters()))
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    found["first"] = found["forward"] or found["backward"] or found["parameter"]
    found["grad_norm"] = norm
    return found
