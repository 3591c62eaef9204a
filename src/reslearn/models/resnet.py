"""ImageNet ResNets and their plain counterparts: He, Zhang, Ren, Sun, "Deep Residual Learning
for Image Recognition", CVPR 2016 (arXiv:1512.03385), Table 1.

Layout (Table 1): conv1 7x7/2, 64 -> 3x3/2 max pool -> conv2_x..conv5_x (``layer1..layer4``) ->
global average pool -> fc. State_dict keys equal torchvision's ``ResNet``, so its weights load
with a plain ``load_state_dict`` (use ``variant="v1.5"`` for torchvision's bottleneck stride).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import BasicBlock, Bottleneck, he_init
from ..registry import register_model
from .base import ClassifierModel, check_choice, check_num_classes, check_positive

__all__ = ["ResNet", "DEPTHS", "VARIANTS", "imagenet_resnet", "imagenet_plain"]

PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (arXiv:1512.03385)"

# Table 1: depth -> (block, blocks per stage conv2_x..conv5_x).
DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# "paper": stride 2 in the first 1x1 of a bottleneck (the released Caffe models, Table 1 FLOPs).
# "v1.5": stride 2 in the 3x3 (torchvision, NVIDIA's "ResNet v1.5"). Same parameters either way.
VARIANTS = ("paper", "v1.5")


class ResNet(ClassifierModel):
    """ResNet / plain net for ImageNet-sized inputs (He et al. 2016, Table 1).

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks in ``layer1..layer4``.
        num_classes: width of the final fc.
        in_chans: input channels.
        shortcut: ``"A"``, ``"B"`` (default, as the paper's ImageNet models) or ``"C"``, Sec. 3.3.
        variant: ``"paper"`` (default) or ``"v1.5"``; see ``VARIANTS``.
        residual: ``False`` removes every shortcut (the paper's plain networks).
        width: channels of conv1 and conv2_x (64 in the paper); smaller values make tiny test nets.
        zero_init_residual: zero the last BN scale of each block (Goyal et al. 2017); off.
    """

    stage_names = ("conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc")

    def __init__(
        self,
        block: type[nn.Module],
        layers: tuple[int, ...],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        shortcut: str = "B",
        variant: str = "paper",
        residual: bool = True,
        width: int = 64,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        check_positive("in_chans", in_chans)
        check_positive("width", width)
        check_choice("variant", variant, VARIANTS)
        check_choice("shortcut", shortcut, ("A", "B", "C"))
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        self.variant, self.shortcut, self.residual = variant, shortcut, residual
        self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = width
        for i, n in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(
                    block(
                        in_ch,
                        planes,
                        stride=stride if j == 0 else 1,
                        shortcut=shortcut,
                        residual=residual,
                        stride_in_1x1=variant == "paper",
                    )
                )
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, num_classes)
        he_init(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _depth(depth: int) -> tuple[type[nn.Module], tuple[int, int, int, int]]:
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(map(str, DEPTHS))}; got {depth!r}")
    return DEPTHS[depth]


def imagenet_resnet(
    *,
    depth: int,
    num_classes: int = 1000,
    in_chans: int = 3,
    shortcut: str = "B",
    variant: str = "paper",
    width: int = 64,
    zero_init_residual: bool = False,
) -> ResNet:
    """ResNet-``depth`` of Table 1 (18, 34, 50, 101, 152)."""
    block, layers = _depth(depth)
    return ResNet(
        block,
        layers,
        num_classes=num_classes,
        in_chans=in_chans,
        shortcut=shortcut,
        variant=variant,
        width=width,
        zero_init_residual=zero_init_residual,
    )


def imagenet_plain(
    *,
    depth: int,
    num_classes: int = 1000,
    in_chans: int = 3,
    variant: str = "paper",
    width: int = 64,
) -> ResNet:
    """Plain-``depth``: the stack of Table 1 with no shortcuts (Sec. 3.3, Fig. 3 middle)."""
    block, layers = _depth(depth)
    return ResNet(
        block,
        layers,
        num_classes=num_classes,
        in_chans=in_chans,
        variant=variant,
        width=width,
        residual=False,
    )


# Table 1 "FLOPs" (multiply-adds, x10^9) at 224x224, for the paper's stride placement.
_TABLE1_MACS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}
_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}

for _d in DEPTHS:
    register_model(
        f"resnet{_d}",
        family="resnet",
        paper=PAPER,
        input_size=(3, 224, 224),
        num_classes=1000,
        reference={"params": _PARAMS[_d], "macs": _TABLE1_MACS[_d]},
        test_input_size=(3, 64, 64),
        depth=_d,
    )(imagenet_resnet)

for _d in (18, 34):
    register_model(
        f"plain{_d}",
        family="resnet",
        paper=PAPER,
        input_size=(3, 224, 224),
        num_classes=1000,
        reference={"macs": _TABLE1_MACS[_d]},
        test_input_size=(3, 64, 64),
        depth=_d,
    )(imagenet_plain)
