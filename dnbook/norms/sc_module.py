r"""DN's scale-and-shift module (the *SC-module*): FC1, an activation and a grouped FC2 that
turn an input :math:`z` into the scale :math:`\alpha` and shift :math:`\lambda` that
:class:`~dnbook.norms.DynamicNorm2d` applies in place of BN's learned affine parameters."""

from __future__ import annotations

import torch
from torch import nn

from dnbook.norms._validation import check_choice, check_positive_int
from dnbook.norms.fast_dynamic import MERGES, SCALES, SHIFTS
from dnbook.norms.grouped_fc import GroupedFC
from dnbook.norms.squeeze_excitation import reduced_width

# The activation between FC1 and FC2, as modules (the SC-module's ``act``).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


class SCModule(nn.Module):
    r"""DN's scale-and-shift module: from an input :math:`z`, the scale :math:`\alpha` and the
    shift :math:`\lambda`.

    .. math::
        [s, t] = \mathrm{FC}_2\big(\mathrm{act}(\mathrm{FC}_1(z))\big), \qquad
        \alpha = f(s), \quad \lambda = h(t)

    ``fc1``: ``nn.Linear(C, C')``, :math:`C' = \max(\lfloor C / r \rfloor, 1)`, with a bias
    if ``fc1_bias``; ``act``; ``fc2``: :class:`GroupedFC` ``(C', 2C)`` without bias, ``g``
    inputs per group. With ``merge`` (DN-C), the input is the two rows :math:`[E; Std]`,
    summed after FC1 (``"fc1"``) or after FC2 (``"fc2"``).

    The FCs run with autocast off, in their weights' dtype (the input is cast to it): like
    BatchNorm's affine parameters, the SC-module stays in float32 under bf16 autocast.

    Args:
        num_features: :math:`C`.
        r: reduction ratio of FC1 (default 16).
        g: input channels per group of FC2, or ``"oup"`` (default 1).
        merge: ``None`` (default: each row of the input is a sample), ``"fc1"`` or ``"fc2"``.
        activation: ``"relu"`` (default), ``"silu"`` or ``"gelu"``.
        scale, shift: :math:`f` (default ``"sigmoid"``) and :math:`h` (default ``"tanh"``).
        fc1_bias: FC1 has a bias (default ``False``).

    Shape:
        - Input: :math:`(N, C)`, or :math:`(2, C)` with ``merge``
        - Output: ``(alpha, lambda)``, :math:`(N, C)` each, or :math:`(C,)` with ``merge``

    Example:
        >>> alpha, shift = SCModule(32, r=4)(torch.randn(5, 32))
        >>> alpha.shape
        torch.Size([5, 32])
    """

    def __init__(
        self,
        num_features: int,
        r: int = 16,
        g: int | str = 1,
        merge: str | None = None,
        activation: str = "relu",
        scale: str = "sigmoid",
        shift: str = "tanh",
        fc1_bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.merge = None if merge is None else check_choice("merge", merge, MERGES)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.scale = check_choice("scale", scale, SCALES)
        self.shift = check_choice("shift", shift, SHIFTS)
        hidden = reduced_width(num_features, r)
        self.fc1 = nn.Linear(num_features, hidden, bias=fc1_bias, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = GroupedFC(hidden, 2 * num_features, g=g, bias=False).to(device, dtype)
        # No reset_parameters() here: the FCs are initialized by their own constructors, and
        # DynamicNorm2d's reset draws them once more, as before the SC-module was a submodule,
        # so that a seeded model gets the weights of every stored run.

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(z.device.type, enabled=False):
            hidden = self.fc1(z.to(self.fc1.weight.dtype))
            if self.merge is None:
                st = self.fc2(self.act(hidden))  # (N, 2C)
            elif self.merge == "fc1":
                # [s, t] = FC2(act(FC1(E) + FC1(Std)))
                st = self.fc2(self.act(hidden.sum(dim=0, keepdim=True)))[0]
            else:
                # [s, t] = FC2(act(FC1(E))) + FC2(act(FC1(Std)))
                st = self.fc2(self.act(hidden)).sum(dim=0)
            s, t = st.chunk(2, dim=-1)
            return SCALES[self.scale](s), SHIFTS[self.shift](t)

    def extra_repr(self) -> str:
        return (
            f"merge={self.merge}, activation={self.activation}, scale={self.scale}, "
            f"shift={self.shift}"
        )
