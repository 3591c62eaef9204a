"""CIFAR-10 ResNets and plain nets: He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016 (arXiv:1512.03385), Sec. 4.2.

"The first layer is 3x3 convolutions. Then we use a stack of 6n layers with 3x3 convolutions on
the feature maps of sizes {32, 16, 8} respectively, with 2n layers for each feature map size. The
numbers of filters are {16, 32, 64} respectively. The subsampling is performed by convolutions
with a stride of 2. The network ends with a global average pooling, a 10-way fully-connected
layer, and softmax." Shortcut A (zero-padding, parameter-free) is the paper's choice here.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import BasicBlock, he_init
from ..registry import register_model
from .base import ClassifierModel, check_choice, check_num_classes, check_positive

__all__ = ["CifarResNet", "cifar_resnet", "cifar_plain", "depth_to_n"]

PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016, Sec. 4.2"


def depth_to_n(depth: int | None, n: int | None) -> int:
    """Blocks per stage for depth 6n+2; exactly one of ``depth`` and ``n`` must be given."""
    if (depth is None) == (n is None):
        raise ValueError("give exactly one of depth (=6n+2) and n")
    if n is None:
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...); got {depth!r}")
        n = (depth - 2) // 6
    return check_positive("n", n)


class CifarResNet(ClassifierModel):
    """The 6n+2-layer CIFAR network (Sec. 4.2); ``residual=False`` is its plain twin.

    Args:
        n: BasicBlocks per stage (depth 6n+2).
        num_classes: classes of the final fc (10 for CIFAR-10).
        in_chans: input channels (1 for MNIST-like data).
        shortcut: ``"A"`` (default, the paper's), ``"B"`` or ``"C"``.
        residual: ``False`` gives the plain net.
        width: filters of the first stage (16 in the paper; 32 and 64 follow).
        zero_init_residual: zero the last BN scale of each block (Goyal et al. 2017); off.
    """

    stage_names = ("conv1", "layer1", "layer2", "layer3", "fc")

    def __init__(
        self,
        n: int,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "A",
        residual: bool = True,
        width: int = 16,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        check_positive("n", n)
        check_positive("in_chans", in_chans)
        check_positive("width", width)
        check_choice("shortcut", shortcut, ("A", "B", "C"))
        self.shortcut, self.residual, self.depth = shortcut, residual, 6 * n + 2
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        in_ch = width
        for i in range(3):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(
                    BasicBlock(in_ch, planes, stride=stride, shortcut=shortcut, residual=residual)
                )
                in_ch = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, num_classes)
        he_init(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


def cifar_resnet(
    *,
    depth: int | None = None,
    n: int | None = None,
    num_classes: int = 10,
    in_chans: int = 3,
    shortcut: str = "A",
    width: int = 16,
    zero_init_residual: bool = False,
) -> CifarResNet:
    """ResNet-(6n+2) for CIFAR; give ``depth`` or ``n``."""
    return CifarResNet(
        depth_to_n(depth, n),
        num_classes=num_classes,
        in_chans=in_chans,
        shortcut=shortcut,
        width=width,
        zero_init_residual=zero_init_residual,
    )


def cifar_plain(
    *,
    depth: int | None = None,
    n: int | None = None,
    num_classes: int = 10,
    in_chans: int = 3,
    width: int = 16,
) -> CifarResNet:
    """Plain-(6n+2) for CIFAR: the same stack with no shortcuts (Fig. 6 left)."""
    return CifarResNet(
        depth_to_n(depth, n),
        num_classes=num_classes,
        in_chans=in_chans,
        width=width,
        residual=False,
    )


# Parameter counts with option A (the paper's Table 6 rounds them: 0.27M ... 19.4M).
_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
# Table 6 test error (%), the paper's figures (110: best of 5 runs; mean 6.61 +- 0.16).
TABLE6_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}

for _d, _p in _PARAMS.items():
    register_model(
        f"resnet{_d}",
        family="cifar_resnet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        reference={"params": _p, "cifar10_error": TABLE6_ERROR[_d]},
        depth=_d,
    )(cifar_resnet)

for _d in (20, 32, 44, 56, 110):
    register_model(
        f"plain{_d}",
        family="cifar_resnet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        reference={"params": _PARAMS[_d]},  # option A adds nothing over plain
        depth=_d,
    )(cifar_plain)
