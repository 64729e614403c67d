"""Squeeze-and-Excitation (Hu et al., 2018) and the DN paper's "SE then BN" layer (eq. 3-5).

SE rescales each channel by a weight in (0, 1) computed from the whole feature map: squeeze
(average-pool each channel to one number), excite (FC c -> c/r, ReLU, FC c/r -> c, sigmoid),
scale. The DN paper puts an SE block right before BN as the baseline that DN-B should beat
(Table 2), so ``SEBatchNorm2d`` is BN(alpha * X).

The FCs act on (N, C) vectors as ``nn.Linear``: torchvision writes them as 1x1 convolutions on
(N, C, 1, 1) tensors, which cost a CPU far more time for the same arithmetic (timings belong in
``results/bench/``, written by ``python -m dnbook bench``).
"""

from __future__ import annotations

import torch
from torch import nn

from dnbook.norms._validation import check_batch_statistics, check_input, check_positive_int

# Hidden width rule, shared by SE and DN's SC-module: c // r, but at least 1 (c = 16, r = 32
# would otherwise leave no hidden unit). With it, and the group rule of grouped_fc.py, the
# paper's parameter counts for MobileNetV2 are reproduced.


def reduced_width(num_features: int, r: int) -> int:
    """Hidden width of a bottleneck with reduction ratio ``r``: ``max(num_features // r, 1)``."""
    check_positive_int("r", r)
    return max(num_features // r, 1)


class SqueezeExcitation(nn.Module):
    r"""Squeeze-and-Excitation block on (N, C, H, W) features.

    .. math::
        z = \frac{1}{HW} \sum_{h, w} x_{:, :, h, w}, \qquad
        \alpha = \sigma\big(W_2\, \mathrm{ReLU}(W_1 z + b_1) + b_2\big), \qquad
        y = \alpha \cdot x

    with :math:`W_1 \in \mathbb{R}^{c' \times c}`, :math:`W_2 \in \mathbb{R}^{c \times c'}`,
    hidden width :math:`c' = \max(\lfloor c / r \rfloor, 1)`, and :math:`\alpha \in (0, 1)^{N
    \times C}` broadcast over the spatial positions.

    The squeeze (the spatial mean) is accumulated in float32 for a bf16 or float16 input; under
    autocast the FCs run in the autocast dtype, as ``nn.Linear`` does, and the output has the
    input's dtype and memory format.

    Args:
        num_features: number of channels :math:`C`.
        r: reduction ratio of the hidden layer. Default: 16.
        device, dtype: of the FCs' parameters. Default: ``None`` (PyTorch's defaults).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as the input)

    Example:
        >>> se = SqueezeExcitation(64, r=16)  # hidden width 4
        >>> se(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        num_features: int,
        r: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = check_positive_int("num_features", num_features)
        self.r = r
        self.hidden_features = reduced_width(num_features, r)
        self.fc1 = nn.Linear(num_features, self.hidden_features, **factory)
        self.fc2 = nn.Linear(self.hidden_features, num_features, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.num_features)
        # squeeze: z = mean over (H, W), accumulated in float32 at least        # (N, C)
        z = x.mean(dim=(2, 3), dtype=torch.promote_types(x.dtype, torch.float32)).to(x.dtype)
        # alpha = sigmoid(W2 ReLU(W1 z + b1) + b2)
        alpha = torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))  # excite: (N, C)
        return x * alpha[:, :, None, None]  # scale: (N, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.num_features}, r={self.r}, hidden_features={self.hidden_features}"


class SEBatchNorm2d(nn.Module):
    r"""The DN paper's "SE then BN" layer (eq. 3-5): Squeeze-and-Excitation, then BatchNorm.

    .. math::
        x = \alpha * X, \qquad
        y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} * \gamma + \beta
          = \frac{\alpha X - E[\alpha X]}{\sqrt{Var[\alpha X] + \epsilon}} * \gamma + \beta

    where :math:`X` is the convolution's output and :math:`\alpha` the SE block's per-sample,
    per-channel weight. BN then normalizes the recalibrated features with the batch statistics
    (training) or its running statistics (eval), as ``torch.nn.BatchNorm2d`` does.

    Under autocast both parts behave as PyTorch's layers do (BN's statistics in float32); the
    output has the input's dtype and memory format.

    Args:
        num_features: number of channels :math:`C`.
        r: reduction ratio of the SE block. Default: 16.
        eps: added to the variance for numerical stability. Default: 1e-5.
        momentum: BN's running-statistics momentum (``None``: cumulative average).
            Default: 0.1.
        device, dtype: of the parameters and buffers. Default: ``None`` (PyTorch's defaults).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as the input)

    Example:
        >>> layer = SEBatchNorm2d(64, r=16)
        >>> layer(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        num_features: int,
        r: int = 16,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = check_positive_int("num_features", num_features)
        self.se = SqueezeExcitation(num_features, r=r, **factory)
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.se.reset_parameters()
        self.bn.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.num_features)
        if self.training:
            check_batch_statistics(type(self).__name__, x)
        # y = BN(alpha * X)   (eq. 3-5)
        return self.bn(self.se(x))

    def extra_repr(self) -> str:
        return f"{self.num_features}, r={self.se.r}, eps={self.bn.eps}, momentum={self.bn.momentum}"
