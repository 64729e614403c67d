r"""Dynamic Normalization (DN-C and DN-B): BatchNorm whose affine parameters are generated.

BN ends in an affine step :math:`Y = \hat X \gamma + \beta` with learned, fixed
:math:`\gamma, \beta \in \mathbb{R}^c` (eq. 1-2). DN drops them and lets a small
scale-and-shift network (the *SC-module*: FC, activation, grouped FC) produce the scale
:math:`\alpha` and shift :math:`\lambda` from the data (eq. 6-7):

- DN-C (batch-shared, channel-wise): from the batch's statistics E[X] and Std[X], one
  :math:`\alpha, \lambda \in \mathbb{R}^c` for the whole batch;
- DN-B (batch- and channel-wise): from each sample's pooled features, one
  :math:`\alpha, \lambda \in \mathbb{R}^{n \times c}` per sample.

The paper fixes the SC-module's shape (FC1 c -> c/r, grouped FC2 c/r -> 2c without bias, ``g``
inputs per group) but not whether FC1 has a bias (``fc1_bias``; ``python -m dnbook complexity``
shows which reading its parameter counts fit), the activation between the FCs, how the FC
outputs become :math:`\alpha, \lambda`, their initialization, or whether DN-B pools the raw or
the normalized feature. Those are the layer's design options below. The defaults (ReLU,
alpha = 2 sigmoid(s), lambda = tanh(t), normalized input, FC2 zero-initialized, no FC1 bias)
come from the ``dnb_design``
experiment (results in ``results/cpu/``, shown in chapter 5): at a small CPU scale (1-2 seeds)
it was the only DN-B variant whose training loss stayed bounded at lr 0.05, 0.2 and 0.5 (the
others ended lr 0.5 at training losses of 49 to 1,290); its mean test accuracy over the lrs was
the highest, but within noise of the next variants. No variant beat BN at lr 0.2 or 0.5 there.
A pointer, not a settled result.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dnbook.norms._validation import (
    check_batch_statistics,
    check_choice,
    check_fraction,
    check_input,
    check_positive_int,
)
from dnbook.norms.batchnorm import register_running_stats, reset_running_stats, update_running_stats
from dnbook.norms.fast_dynamic import (
    MERGES,
    MODES,
    SC_INPUTS,
    SCALES,
    SHIFTS,
    accumulation_dtype,
    dynamic_norm,
)
from dnbook.norms.grouped_fc import GroupedFC
from dnbook.norms.squeeze_excitation import reduced_width

# The activation between FC1 and FC2, as modules (the SC-module's ``act``).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}

FC2_INITS = ("zeros", "default")
IMPLS = ("fast", "reference")
__all__ = ["ACTIVATIONS", "FC2_INITS", "IMPLS", "MERGES", "MODES", "SC_INPUTS", "SCALES", "SHIFTS"]
__all__ += ["DynamicNorm2d", "SCModule"]


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


class DynamicNorm2d(nn.Module):
    r"""Dynamic Normalization, DN-B (``mode="B"``) or DN-C (``mode="C"``), on (N, C, H, W).

    Normalization (eq. 6), exactly BN's without its affine step (the paper writes
    :math:`\tilde X` for the normalized value and :math:`\hat X` for the output; here, as in
    chapter 0's table, :math:`\hat X` is the normalized value and :math:`Y` the output):

    .. math::
        \hat X = \frac{X - E[X]}{\sqrt{Var[X] + \epsilon}}

    with the batch statistics in training (biased variance; the running statistics are
    updated as in ``torch.nn.BatchNorm2d``) and ``running_mean``, ``running_var`` in eval.

    Affine (eq. 7), with the scale and shift generated by the SC-module
    (:class:`SCModule`, the submodule ``sc_module``):

    .. math::
        Y = \hat X * \alpha + \lambda, \qquad
        [s, t] = \mathrm{FC}_2\big(\mathrm{act}(\mathrm{FC}_1(z))\big), \qquad
        \alpha = f(s), \quad \lambda = h(t)

    ``fc1``: ``nn.Linear(C, C')``, without bias unless ``fc1_bias``,
    :math:`C' = \max(\lfloor C / r \rfloor, 1)`;
    ``fc2``: :class:`GroupedFC` ``(C', 2C)`` without bias, ``g`` inputs per group; ``s`` is the
    first half of FC2's output and ``t`` the second; :math:`f, h` are set by ``scale``, ``shift``.
    FC2's number of groups is the largest divisor of :math:`C'` that is at most
    :math:`\max(\lfloor C' / g \rfloor, 1)` and divides :math:`2C` (1 for ``g="oup"``), the rule
    of :mod:`dnbook.norms.grouped_fc` that reproduces the paper's parameter counts.

    - **DN-B**: :math:`z \in \mathbb{R}^{N \times C}` is each sample's spatial mean of
      :math:`\hat X` (``sc_input="normalized"``) or of :math:`X` (``"raw"``), so
      :math:`\alpha, \lambda \in \mathbb{R}^{N \times C}`. In eval every sample's output depends
      on that sample alone.
    - **DN-C**: the SC-module sees the batch's :math:`E[X]` and
      :math:`Std[X] = \sqrt{Var[X] + \epsilon}` (biased variance) as two branches with shared
      weights, summed after FC1 (``merge="fc1"``):
      :math:`[s, t] = \mathrm{FC}_2(\mathrm{act}(\mathrm{FC}_1(E) + \mathrm{FC}_1(Std)))`, or
      after FC2 (``merge="fc2"``):
      :math:`[s, t] = \mathrm{FC}_2(\mathrm{act}(\mathrm{FC}_1(E))) +
      \mathrm{FC}_2(\mathrm{act}(\mathrm{FC}_1(Std)))`; so :math:`\alpha, \lambda \in
      \mathbb{R}^C`. In eval (with ``track_running_stats``) E and Std are ``running_mean`` and
      :math:`\sqrt{\text{running\_var} + \epsilon}`, the statistics eval normalizes with.
      ``sc_input`` does not apply: DN-C's input is, by definition, the raw feature's statistics.

    There is no ``weight`` or ``bias`` by default: with FC2 zero-initialized
    (``fc2_init="zeros"``) the layer starts as BN with :math:`\gamma = 1, \beta = 0` for every
    ``scale`` and ``shift``.

    **Base affine** (``base_affine=True``; the book's own variant, not the paper's DN, as in
    IEBN and RBN): a learnable per-channel ``weight`` :math:`\gamma` and ``bias``
    :math:`\beta`, initialized to 1 and 0, around the generated scale and shift:

    .. math::
        \alpha = \gamma \, f(s), \qquad \lambda = \beta + h(t)

    It adds :math:`2C` parameters, so it never stands in for the paper's DN in a parameter
    count. The trainer groups ``weight`` and ``bias`` with the norm layers' parameters, as
    BN's affine (no weight decay unless ``norm_weight_decay``).

    Statistics and the SC-module are computed in float32 for bf16 or float16 inputs (as under
    autocast; the SC-module's FCs run with autocast off) and the output has the input's dtype
    and memory format, as with ``torch.nn.BatchNorm2d``.

    **Recording** :math:`\alpha, \lambda`: with ``record_affine`` set (at construction or
    later), every forward keeps its :math:`\alpha, \lambda`, detached, as ``last_alpha`` and
    ``last_shift``: shape (N, C) for DN-B, (C,) for DN-C. Off (the default) it costs nothing.

    Args:
        num_features: number of channels :math:`C`.
        mode: ``"B"`` (DN-B, per sample) or ``"C"`` (DN-C, shared by the batch). Default ``"B"``.
        r: reduction ratio of FC1 (default 16).
        g: input channels per group of FC2, or ``"oup"`` for a dense FC2 (default 1).
        merge: DN-C only: where the E and Std branches are summed, ``"fc1"`` (default) or
            ``"fc2"``.
        eps: added to the variance for numerical stability (default 1e-5).
        momentum: running-statistics momentum (default 0.1; ``None``: cumulative average).
        track_running_stats: keep ``running_mean``/``running_var`` and use them in eval
            (default ``True``); if ``False``, batch statistics are used in eval too.
        activation: between FC1 and FC2: ``"relu"`` (default), ``"silu"`` or ``"gelu"``.
        scale: :math:`\alpha = f(s)`: ``"sigmoid"`` :math:`2\sigma(s)` (default), ``"linear"``
            :math:`1 + s`, ``"tanh"`` :math:`1 + \tanh(s)`.
        shift: :math:`\lambda = h(t)`: ``"linear"`` :math:`t` or ``"tanh"`` (default).
        sc_input: DN-B only: pool the ``"normalized"`` feature (default) or the ``"raw"`` input.
        detach_sc_input: stop gradients from flowing into the SC-module's input (default
            ``False``).
        fc2_init: ``"zeros"`` (default; :math:`\alpha = 1, \lambda = 0` at start) or
            ``"default"`` (PyTorch's init of a linear layer).
        fc1_bias: give FC1 a bias (default ``False``, the layer of every stored result).
        base_affine: learnable ``weight`` and ``bias`` (C,) with :math:`\alpha = \gamma f(s)`,
            :math:`\lambda = \beta + h(t)` (see above). Default: ``False``.
        record_affine: keep the last forward's :math:`\alpha, \lambda` (see above; default
            ``False``).
        impl: ``"fast"`` (default): :func:`dnbook.norms.fast_dynamic.dynamic_norm`, the
            functional, with few passes over the activations; ``"reference"``: the equations
            step by step, as written in this module. Both compute the same function and
            gradients.
        device, dtype: of the parameters and buffers, as in PyTorch's layers.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as the input)

    Example:
        >>> dn = DynamicNorm2d(64, mode="B", r=16, g=1)
        >>> dn(torch.randn(8, 64, 14, 14)).shape
        torch.Size([8, 64, 14, 14])
    """

    # 2: the SC-module's FCs moved under ``sc_module`` (version 1: ``fc1.weight``, ...).
    _version = 2

    def __init__(
        self,
        num_features: int,
        mode: str = "B",
        r: int = 16,
        g: int | str = 1,
        merge: str = "fc1",
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
        activation: str = "relu",
        scale: str = "sigmoid",
        shift: str = "tanh",
        sc_input: str = "normalized",
        detach_sc_input: bool = False,
        fc2_init: str = "zeros",
        fc1_bias: bool = False,
        base_affine: bool = False,
        record_affine: bool = False,
        impl: str = "fast",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.mode = check_choice("mode", mode, MODES)
        self.r = r
        self.g = g
        self.merge = check_choice("merge", merge, MERGES)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        check_fraction("momentum", momentum, allow_none=True)
        self.eps = eps
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        self.sc_input = check_choice("sc_input", sc_input, SC_INPUTS)
        self.detach_sc_input = detach_sc_input
        self.fc2_init = check_choice("fc2_init", fc2_init, FC2_INITS)
        self.fc1_bias = fc1_bias
        self.base_affine = base_affine
        self.record_affine = record_affine
        self.impl = check_choice("impl", impl, IMPLS)
        self.last_alpha: torch.Tensor | None = None
        self.last_shift: torch.Tensor | None = None

        self.sc_module = SCModule(
            num_features,
            r,
            g,
            merge=merge if mode == "C" else None,
            activation=activation,
            scale=scale,
            shift=shift,
            fc1_bias=fc1_bias,
            device=device,
            dtype=dtype,
        )
        # The base affine gamma, beta, under BN's names (absent, as in BatchNorm2d(affine=False),
        # when off: the state dict of every stored result has no such keys).
        if base_affine:
            self.weight = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype))
            self.bias = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        # BN's buffers running_mean, running_var, num_batches_tracked (None if not tracked).
        register_running_stats(self, num_features, track_running_stats, device, dtype)
        self.reset_parameters()

    # The SC-module's parts and options, readable on the layer itself.
    fc1 = property(lambda self: self.sc_module.fc1, doc="FC1, ``sc_module.fc1``.")
    fc2 = property(lambda self: self.sc_module.fc2, doc="FC2, ``sc_module.fc2``.")
    act = property(lambda self: self.sc_module.act, doc="The activation, ``sc_module.act``.")
    activation = property(lambda self: self.sc_module.activation)
    scale = property(lambda self: self.sc_module.scale)
    shift = property(lambda self: self.sc_module.shift)

    def reset_running_stats(self) -> None:
        reset_running_stats(self)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        self.sc_module.reset_parameters()
        if self.fc2_init == "zeros":
            nn.init.zeros_(self.sc_module.fc2.weight)
        if self.base_affine:
            # gamma = 1, beta = 0: the layer starts as without the base affine
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_input(name, x, self.num_features)
        # PyTorch's BN semantics: batch statistics in training, or in eval without running ones.
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            check_batch_statistics(name, x)
        if self.impl == "reference":
            return self._reference_forward(x, use_batch_stats)
        sc = self.sc_module
        y, mean, var = dynamic_norm(
            x,
            self.running_mean,
            self.running_var,
            sc.fc1.weight,
            sc.fc1.bias,
            sc.fc2.weight,
            use_batch_stats,
            self.eps,
            weight=self.weight,
            bias=self.bias,
            mode=self.mode,
            activation=self.activation,
            scale=self.scale,
            shift=self.shift,
            merge=self.merge,
            sc_input=self.sc_input,
            detach_sc_input=self.detach_sc_input,
            affine_hook=self._record if self.record_affine else None,
        )
        if self.training and self.track_running_stats:
            update_running_stats(self, mean, var, x.numel() // x.shape[1])
        return y

    def _record(self, alpha: torch.Tensor, shift: torch.Tensor) -> None:
        """Keep this forward's alpha and lambda (``record_affine``)."""
        self.last_alpha, self.last_shift = alpha.detach(), shift.detach()

    def _reference_forward(self, x: torch.Tensor, use_batch_stats: bool) -> torch.Tensor:
        """Eq. 6-7 step by step: normalize, pool or take the statistics, SC-module, affine."""
        x_tilde = self._normalize(x, use_batch_stats)  # eq. 6: (N, C, H, W)
        # statistics and pooled features in float32 (at least), as BN's statistics
        acc = accumulation_dtype(x.dtype)
        if self.mode == "B":
            pooled = x_tilde if self.sc_input == "normalized" else x
            z = pooled.to(acc).mean(dim=(2, 3))  # (N, C)
        else:
            if use_batch_stats:
                # F.batch_norm does not return the statistics it used, so they are computed
                # again here: one more pass over x, for the layer the paper found does not train.
                var, mean = torch.var_mean(x.to(acc), dim=(0, 2, 3), correction=0)  # (C,) each
            else:
                mean, var = self.running_mean.to(acc), self.running_var.to(acc)
            # Std[X] = sqrt(Var[X] + eps); the E and Std branches as two rows
            z = torch.stack([mean, torch.sqrt(var + self.eps)])  # (2, C)
        if self.detach_sc_input:
            z = z.detach()
        alpha, shift = self.sc_module(z)  # (N, C) or (C,) each
        if self.base_affine:
            # alpha = gamma f(s),  lambda = beta + h(t)
            alpha, shift = alpha * self.weight, shift + self.bias
        if self.record_affine:
            self._record(alpha, shift)
        # eq. 7: X_hat = X_tilde * alpha + lambda, alpha and lambda broadcast over H, W
        alpha, shift = alpha.to(x_tilde.dtype), shift.to(x_tilde.dtype)
        return x_tilde * alpha[..., None, None] + shift[..., None, None]

    def _normalize(self, x: torch.Tensor, use_batch_stats: bool) -> torch.Tensor:
        """Eq. 6 with ``torch.nn.BatchNorm2d``'s running-statistics semantics, no affine."""
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            # momentum=None: cumulative moving average, as in PyTorch.
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            weight=None,
            bias=None,
            training=use_batch_stats,
            momentum=factor,
            eps=self.eps,
        )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, *args: Any
    ) -> None:
        # Version 1 (before the SC-module was a submodule) stored fc1.weight, fc2.weight.
        if local_metadata.get("version", 1) < 2:
            for key in [k for k in state_dict if k.startswith((prefix + "fc1.", prefix + "fc2."))]:
                new_key = prefix + "sc_module." + key[len(prefix) :]
                state_dict.setdefault(new_key, state_dict.pop(key))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def extra_repr(self) -> str:
        mode_option = f"merge={self.merge}" if self.mode == "C" else f"sc_input={self.sc_input}"
        return (
            f"{self.num_features}, mode={self.mode}, r={self.r}, g={self.g}, {mode_option}, "
            f"eps={self.eps}, momentum={self.momentum}, "
            f"track_running_stats={self.track_running_stats}, activation={self.activation}, "
            f"scale={self.scale}, shift={self.shift}, detach_sc_input={self.detach_sc_input}, "
            f"fc2_init={self.fc2_init}, fc1_bias={self.fc1_bias}, "
            f"base_affine={self.base_affine}, "
            f"record_affine={self.record_affine}, impl={self.impl}"
        )
