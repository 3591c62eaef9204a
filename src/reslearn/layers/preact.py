"""Residual Units of He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016
(arXiv:1603.05027), shared by the pre-activation ResNets and the Wide ResNets (Zagoruyko &
Komodakis, BMVC 2016, whose B(3,3) block is the full pre-activation basic unit with dropout).

A unit computes x_{l+1} = f(h(x_l) + F(x_l)) (Eq. 1-2). The paper varies two things, both
selectable here:

* the place of BN and ReLU (Sec. 4, Fig. 4, Table 2): ``ordering`` in :data:`ORDERINGS`;
* the shortcut h (Sec. 3.1, Fig. 2, Table 1): ``shortcut_type`` in :data:`SHORTCUT_TYPES`.

Layer names follow torchvision (``conv1``, ``bn1``, ..., ``downsample``); in the pre-activation
orderings ``bn{i}`` is the BN *before* ``conv{i}``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Describable, ZeroPadShortcut, conv1x1, make_shortcut
from .gates import SigmoidGate

__all__ = [
    "ORDERINGS",
    "PREACT_ORDERINGS",
    "SHORTCUT_TYPES",
    "BNReLU",
    "ResidualUnit",
    "BasicUnit",
    "BottleneckUnit",
]

# Fig. 4 (a)-(e), Table 2.
ORDERINGS = (
    "original",  # (a) conv-BN-ReLU-conv-BN, addition, ReLU (He et al. 2016a)
    "bn_after_addition",  # (b) conv-BN-ReLU-conv, addition, BN, ReLU
    "relu_before_addition",  # (c) conv-BN-ReLU-conv-BN-ReLU, addition
    "relu_only_preact",  # (d) ReLU-conv-BN-ReLU-conv-BN, addition
    "full_preact",  # (e) BN-ReLU-conv-BN-ReLU-conv, addition: the proposed unit
)
PREACT_ORDERINGS = ("relu_only_preact", "full_preact")

# Fig. 2 (a)-(f), Table 1.
SHORTCUT_TYPES = (
    "original",  # (a) h(x) = x
    "constant_scaling",  # (b) lambda * x, and optionally (1 - lambda) * F
    "exclusive_gating",  # (c) (1 - g(x)) * x + g(x) * F, g = sigmoid(1x1 conv)
    "shortcut_only_gating",  # (d) (1 - g(x)) * x + F
    "conv_shortcut",  # (e) 1x1 conv (+BN) on every shortcut
    "dropout_shortcut",  # (f) dropout on the shortcut
)
_GATED = ("exclusive_gating", "shortcut_only_gating")


class BNReLU(nn.Module, Describable):
    """BN then ReLU: the "extra activation right after [the last unit's] addition" (Sec. 4.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(x))

    def describe(self) -> str:
        return "BN, ReLU"


class ResidualUnit(nn.Module, Describable):
    """One Residual Unit with ``len(kernels)`` weight layers (subclasses fix the kernels).

    Args:
        in_ch: input channels.
        planes: width of the inner layers; the unit outputs ``planes * expansion`` channels.
        stride: stride of the unit (of its first conv, or of its 3x3 with ``stride_in_1x1=False``).
        ordering: one of :data:`ORDERINGS` (default: full pre-activation).
        shortcut: ``"A"`` (zero-padding) or ``"B"`` (1x1 projection) where the shape changes.
            Pre-activation units project with a bare 1x1 conv, as the authors' code; the
            post-activation ones use conv + BN (He et al. 2016a, option B).
        shortcut_type: one of :data:`SHORTCUT_TYPES` (Table 1).
        preact: ``False`` drops the unit's first pre-activation because its input is already
            activated ("for the first Residual Unit ... we adopt the first activation right after
            conv1 and before splitting into two paths", Sec. 4.1).
        dropout: dropout probability before every weight layer but the first (Wide ResNets put
            it between the two 3x3 convs, Zagoruyko & Komodakis Sec. 2.4).
        stride_in_1x1: stride in the first 1x1 of a bottleneck (the authors' code) or in the 3x3.
        gate_bias: initial gate bias b_g for the gated shortcuts (Table 1: -6 is the best).
        shortcut_scale, residual_scale: the constants of "constant_scaling" (Table 1: 0.5, 0.5).
        shortcut_dropout: dropout probability of "dropout_shortcut" (Table 1: 0.5).
    """

    kernels: tuple[int, ...] = (3, 3)
    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        *,
        stride: int = 1,
        ordering: str = "full_preact",
        shortcut: str = "B",
        shortcut_type: str = "original",
        preact: bool = True,
        dropout: float = 0.0,
        stride_in_1x1: bool = True,
        gate_bias: float = -6.0,
        shortcut_scale: float = 0.5,
        residual_scale: float = 0.5,
        shortcut_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if ordering not in ORDERINGS:
            raise ValueError(
                f"ordering must be one of {', '.join(map(repr, ORDERINGS))}; got {ordering!r}"
            )
        if shortcut_type not in SHORTCUT_TYPES:
            raise ValueError(
                f"shortcut_type must be one of {', '.join(map(repr, SHORTCUT_TYPES))}; "
                f"got {shortcut_type!r}"
            )
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B'; got {shortcut!r}")
        out_ch = planes * self.expansion
        n = len(self.kernels)
        widths = [planes] * (n - 1) + [out_ch]
        # The first layer takes the stride, unless a bottleneck puts it in its 3x3 ("v1.5").
        strided = 0 if stride_in_1x1 or self.kernels[0] == 3 else self.kernels.index(3)
        self.ordering, self.shortcut_type, self.preact = ordering, shortcut_type, preact
        self.num_layers, self.stride = n, stride
        is_preact = ordering in PREACT_ORDERINGS
        ch = in_ch
        for i, (k, w) in enumerate(zip(self.kernels, widths), start=1):
            # Pre-activation BN normalises the conv's input; the others its output.
            if ordering == "full_preact" and (i > 1 or preact):
                self.add_module(f"bn{i}", nn.BatchNorm2d(ch))
            conv_stride = stride if i - 1 == strided else 1
            conv = nn.Conv2d(ch, w, k, stride=conv_stride, padding=k // 2, bias=False)
            self.add_module(f"conv{i}", conv)
            if ordering != "full_preact":
                self.add_module(f"bn{i}", nn.BatchNorm2d(w))
            ch = w
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

        changes = stride != 1 or in_ch != out_ch
        if shortcut_type == "conv_shortcut":
            self.downsample: nn.Module | None = make_shortcut("C", in_ch, out_ch, stride)
        elif not changes:
            self.downsample = None
        elif shortcut == "A":
            self.downsample = ZeroPadShortcut(in_ch, out_ch, stride)
        elif is_preact:
            self.downsample = conv1x1(in_ch, out_ch, stride)
        else:
            self.downsample = make_shortcut("B", in_ch, out_ch, stride)
        # Where the shape changes, the pre-activation is shared by both paths (the authors'
        # code: "common BN, ReLU" before the projection), so projections see normalised input.
        self.share_preact = is_preact and preact and self.downsample is not None

        if shortcut_type in _GATED:
            # g(x) = sigmoid(W_g x + b_g) with W_g a 1x1 convolution of the unit's input (Sec. 3.1).
            self.gate = SigmoidGate(nn.Conv2d(in_ch, out_ch, 1, stride=stride), gate_bias)
        self.shortcut_scale, self.residual_scale = float(shortcut_scale), float(residual_scale)
        if shortcut_type == "dropout_shortcut":
            self.shortcut_drop = nn.Dropout(shortcut_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ordering = self.ordering
        out = x
        if self.preact and ordering == "full_preact":
            out = self.relu(self.bn1(x))
        elif self.preact and ordering == "relu_only_preact":
            out = F.relu(x)  # not in place: x still feeds the shortcut
        shortcut_in = out if self.share_preact else x
        n = self.num_layers
        for i in range(1, n + 1):
            if i > 1:
                if ordering == "full_preact":
                    out = self.relu(getattr(self, f"bn{i}")(out))
                elif ordering == "relu_only_preact":
                    out = self.relu(out)
                if self.dropout is not None:
                    out = self.dropout(out)
            out = getattr(self, f"conv{i}")(out)
            if ordering == "relu_only_preact":
                out = getattr(self, f"bn{i}")(out)
            elif ordering != "full_preact":
                last = i == n
                if not (last and ordering == "bn_after_addition"):
                    out = getattr(self, f"bn{i}")(out)
                if not last or ordering == "relu_before_addition":
                    out = self.relu(out)
        y = self._add(x, shortcut_in, out)
        if ordering == "original":
            return self.relu(y)
        if ordering == "bn_after_addition":
            return self.relu(getattr(self, f"bn{n}")(y))
        return y

    def _add(
        self, x: torch.Tensor, shortcut_in: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        h = shortcut_in if self.downsample is None else self.downsample(shortcut_in)
        kind = self.shortcut_type
        if kind == "constant_scaling":
            return self.shortcut_scale * h + self.residual_scale * residual
        if kind == "exclusive_gating":
            g = self.gate(x)
            return (1 - g) * h + g * residual
        if kind == "shortcut_only_gating":
            return (1 - self.gate(x)) * h + residual
        if kind == "dropout_shortcut":
            return self.shortcut_drop(h) + residual
        return h + residual

    def describe(self) -> list[str]:
        return [
            f"{k}x{k}, {getattr(self, f'conv{i}').out_channels}"
            for i, k in enumerate(self.kernels, start=1)
        ]


class BasicUnit(ResidualUnit):
    """Two 3x3 convs (He et al. 2016a, Fig. 5 left); full pre-activation by default."""

    kernels = (3, 3)
    expansion = 1


class BottleneckUnit(ResidualUnit):
    """1x1, 3x3, 1x1 (x4) convs (He et al. 2016a, Fig. 5 right); full pre-activation by default."""

    kernels = (1, 3, 1)
    expansion = 4
