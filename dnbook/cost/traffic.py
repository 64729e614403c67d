"""Memory traffic of a norm layer: the ATen kernels one training forward and backward run, and
how many activation-sized tensors they read, write and allocate.

A norm layer on a CPU or GPU is bound by memory, not arithmetic: each pass over an activation
costs about as much as any other. :class:`TrafficCounter` watches every ATen operation (a
``TorchDispatchMode``) and counts them; :func:`layer_traffic` does so for one training step
of a layer (``dnbook.bench.memory_traffic`` builds the layer from a spec).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TrafficCounter(TorchDispatchMode):
    """Counts the ATen kernels run inside it and their traffic in activation-sized tensors.

    A *kernel* is any op that is not a view. ``full_size`` kernels read or write a tensor with
    ``numel`` elements (the activation's size); ``reads`` and ``writes`` count those tensors
    (an in-place op reads and writes its input; an ``out=`` argument is only written; one
    memory passed twice, as in ``x * x``, is read once), and ``allocations`` the written ones
    that are new memory.
    """

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.counts = dict.fromkeys(("kernels", "full_size", "reads", "writes", "allocations"), 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        returns = func._schema.returns
        if any(r.alias_info is not None and not r.alias_info.is_write for r in returns):
            return out  # a view: no kernel, no traffic
        big = lambda t: isinstance(t, torch.Tensor) and t.numel() == self.numel  # noqa: E731
        out_args = {a.name for a in func._schema.arguments if a.is_out}
        read = [a for a in tree_leaves(args) if big(a)]
        read += [v for k, v in kwargs.items() if k not in out_args and big(v)]
        read = list({t.data_ptr(): t for t in read}.values())
        written = [t for t in tree_leaves(out) if big(t)]
        reuses = any(r.alias_info is not None for r in returns)  # in place or out=
        self.counts["kernels"] += 1
        self.counts["full_size"] += bool(read or written)
        self.counts["reads"] += len(read)
        self.counts["writes"] += len(written)
        self.counts["allocations"] += 0 if reuses else len(written)
        return out


def layer_traffic(layer: nn.Module, shape: Sequence[int]) -> dict[str, dict[str, int]]:
    """The cost model of one training forward and backward of ``layer`` (on the CPU) on an
    input of ``shape``: kernel counts and activation-sized reads, writes and allocations (see
    :class:`TrafficCounter`)."""
    x = torch.randn(*shape, requires_grad=True)
    grad_y = torch.randn(*shape)
    layer(x).backward(grad_y)  # first-call work (lazy init) stays out of the counts
    x.grad = None
    with TrafficCounter(x.numel()) as forward:
        y = layer(x)
    with TrafficCounter(x.numel()) as backward:
        y.backward(grad_y)
    return {"forward": forward.counts, "backward": backward.counts}
