"""Residual building blocks of He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016 (arXiv:1512.03385), shared by the ImageNet (Table 1) and CIFAR (Sec. 4.2) families.

Module and attribute names follow torchvision (``conv1``, ``bn1``, ..., ``downsample.0/1``) so
that torchvision state_dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SHORTCUTS",
    "BasicBlock",
    "Bottleneck",
    "ZeroPadShortcut",
    "conv1x1",
    "conv3x3",
    "make_shortcut",
    "he_init",
    "Describable",
    "describe_module",
]

# Sec. 3.3 / Table 3: (A) zero-padding shortcuts for increasing dimensions, all parameter-free;
# (B) projection shortcuts where dimensions increase, identity elsewhere; (C) all projections.
SHORTCUTS = ("A", "B", "C")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding keeps the size; no bias because BN follows (Sec. 3.4)."""
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity on the first ``in_ch`` channels, zeros on the new ones, spatial
    subsampling by ``stride`` ("performed with a stride of 2", Sec. 3.3). No parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"shortcut A cannot reduce channels ({in_ch} -> {out_ch})")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.out_ch > self.in_ch:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_ch - self.in_ch))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}"


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """The shortcut of one block; ``None`` means identity."""
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {', '.join(map(repr, SHORTCUTS))}; got {kind!r}")
    changes = stride != 1 or in_ch != out_ch
    if kind == "A":
        return ZeroPadShortcut(in_ch, out_ch, stride) if changes else None
    if kind == "B" and not changes:
        return None
    # Projection W_s x (Eq. 2): 1x1 conv + BN, torchvision's `downsample` layout.
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class Describable:
    """A module that writes its own row of a paper-style layer table (``reslearn summary``):
    ``describe`` returns the row's text, or one line per layer of a block (shown in brackets, as
    the paper's tables show a block). A declared hook: ``describe_module`` asks for this base
    class, not for an attribute that happens to exist."""

    def describe(self) -> str | list[str]:
        raise NotImplementedError(f"{type(self).__name__} declares Describable but has no describe()")


class BasicBlock(nn.Module, Describable):
    """Two 3x3 convs (Fig. 5 left). ``residual=False`` gives the plain counterpart (no shortcut).

    BN follows each conv and precedes its ReLU; the second ReLU comes after the addition.
    """

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        *,
        stride: int = 1,
        shortcut: str = "B",
        residual: bool = True,
        stride_in_1x1: bool = True,  # unused: only bottlenecks have a 1x1 to stride in
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_ch, planes, stride) if residual else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def describe(self) -> list[str]:
        return [f"3x3, {self.conv1.out_channels}", f"3x3, {self.conv2.out_channels}"]


class Bottleneck(nn.Module, Describable):
    """1x1 (reduce), 3x3, 1x1 (restore, x4) convs (Fig. 5 right).

    ``stride_in_1x1=True`` is the paper's placement ("conv3_1, conv4_1, and conv5_1 with a stride
    of 2", realised in the first 1x1 as in the authors' released Caffe models); ``False`` puts the
    stride in the 3x3 as torchvision does ("ResNet v1.5"), which costs more multiply-adds (ResNet-50:
    4.1G instead of 3.8G) and was reported about 0.5% top-1 better.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        *,
        stride: int = 1,
        shortcut: str = "B",
        residual: bool = True,
        stride_in_1x1: bool = True,
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_ch, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride) if residual else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def describe(self) -> list[str]:
        return [
            f"1x1, {self.conv1.out_channels}",
            f"3x3, {self.conv2.out_channels}",
            f"1x1, {self.conv3.out_channels}",
        ]


def he_init(model: nn.Module, *, zero_init_residual: bool = False) -> None:
    """He et al. 2015 ("Delving deep into rectifiers") normal init for convs, as the paper's
    Sec. 3.4 states; BN scale 1, shift 0. ``zero_init_residual`` zeroes each residual block's last
    BN scale so that blocks start as identities (Goyal et al. 2017, "Accurate, Large Minibatch
    SGD"); it is off by default because the paper does not use it."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)) and m.residual:
                nn.init.zeros_(m.last_bn.weight)


def _kernel(k: int | tuple[int, ...]) -> str:
    k = (k, k) if isinstance(k, int) else tuple(k)
    return "x".join(str(v) for v in k)


def describe_module(module: nn.Module) -> str:
    """A short, paper-style text for one row of a layer table (used by ``reslearn summary``)."""
    if isinstance(module, Describable):
        d = module.describe()
        return d if isinstance(d, str) else "[" + "; ".join(d) + "]"
    if isinstance(module, nn.Sequential) and len(module) and all(
        isinstance(b, Describable) for b in module
    ):
        first = module[0].describe()
        inner = first if isinstance(first, str) else "[" + "; ".join(first) + "]"
        return f"{inner} x {len(module)}"
    if isinstance(module, nn.Conv2d):
        s = module.stride[0]
        return f"{_kernel(module.kernel_size)}, {module.out_channels}" + (
            f", stride {s}" if s > 1 else ""
        )
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(module, nn.MaxPool2d) else "avg"
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        return f"{_kernel(module.kernel_size)} {kind} pool, stride {s}"
    if isinstance(module, nn.Linear):
        return f"average pool, {module.out_features}-d fc"
    return type(module).__name__
