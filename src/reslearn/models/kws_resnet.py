"""Residual networks for keyword spotting: Tang & Lin, "Deep Residual Learning for Small-Footprint
Keyword Spotting", ICASSP 2018 (arXiv:1710.10361), Fig. 1 and Tables 1-2; reference
implementation castorini/honk (``SpeechResModel``).

Input: (B, 1, 101, 40) MFCC, time by coefficient (``reslearn.speech.features.MFCC``).

The paper's network (Fig. 1; Table 1 for res15): a bias-free 3x3 convolution, then residual
blocks of two bias-free 3x3 convolutions, each convolution followed by ReLU and then batch
normalisation (in that order), a residual connection every two convolutions, global average
pooling and a fully connected layer into softmax. res15 has 13 convolutions after the first with
dilation 2^floor(i/3) (i = 0..12), so its receptive field covers the whole second without
pooling; res8 average-pools 4x3 (time x frequency) after the first convolution and res26 2x2,
both undilated. 45 feature maps, 19 in the "-narrow" variants.

What honk's code fixes that the text leaves open, and we follow:

* batch norm has no learned scale or shift (``affine=False``); that is what makes the parameter
  counts come out at the paper's 238K / 438K / 110K (Table 2): convolutions + final layer only.
* the first convolution has ReLU (and the pooling) but no batch norm.
* the residual sum is taken *before* the batch norm that follows it, and the shortcut carries that
  un-normalised sum: s_j = ReLU(conv(BN(ReLU(conv(h_{j-1}))))) + s_{j-1}, h_j = BN(s_j). We write
  each block as [BN of the previous sum] -> conv -> ReLU -> BN -> conv -> ReLU, plus the identity;
  the same computation (a test checks it against honk's loop).
* an odd number of layers (res15: 13) ends with one more conv -> ReLU -> BN outside any block.
* PyTorch's default initialisation.

Multiplies. ``reslearn summary`` counts what the padded ("same") convolutions execute: every
output position of every layer. The paper's Table 2 counts fewer: 5.65M for res8-narrow against
our 7.03M. Its figures are reproduced by counting each 3x3 convolution over the output positions
of an *unpadded* convolution, (H-2)(W-2), ignoring dilation, plus the final layer
(``paper_multiplies``): res8-narrow gets 5.58M (the pooled 25x13 map counts as 23x11 = 253
positions instead of 325, the first convolution 99x38 instead of 101x40), 1.3% under 5.65M;
res15 892.8M vs 894M, res26 379.4M vs 380M, res15-narrow 159.5M vs 160M, res26-narrow 68.0M vs
68.5M, res8 29.2M vs "30M" (rounded). The remaining <= 1.3% is not accounted for (batch norm
and pooling, which the paper may count, are cheap).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import Describable, conv3x3
from ..registry import register_model
from .base import ClassifierModel, check_num_classes, check_positive

__all__ = ["KWSResNet", "KWSBlock", "kws_resnet", "KWS_CONFIGS", "paper_multiplies"]

PAPER = (
    "Tang & Lin, Deep Residual Learning for Small-Footprint Keyword Spotting, ICASSP 2018 "
    "(arXiv:1710.10361), Table 2"
)


def _bn(maps: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(maps, affine=False)  # honk: no learned scale/shift


class KWSBlock(nn.Module, Describable):
    """Two dilated 3x3 convolutions, each followed by ReLU then BN; the identity shortcut carries
    the previous residual sum, whose BN (``pre``) opens this block (none before the first)."""

    def __init__(self, maps: int, dilations: tuple[int, int], *, first: bool) -> None:
        super().__init__()
        self.pre = nn.Identity() if first else _bn(maps)
        self.conv1 = conv3x3(maps, maps, dilation=dilations[0])
        self.bn1 = _bn(maps)
        self.conv2 = conv3x3(maps, maps, dilation=dilations[1])
        self.dilations = dilations

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        y = self.bn1(F.relu(self.conv1(self.pre(s))))
        return F.relu(self.conv2(y)) + s

    def describe(self) -> list[str]:
        c = self.conv1.out_channels
        return [f"3x3, {c}, dilation {d}" for d in self.dilations]


class KWSResNet(ClassifierModel):
    """res8 / res15 / res26 and their narrow variants (Tang & Lin 2018, Table 2).

    Args:
        layers: convolutions after the first (6, 13, 24 for res8, res15, res26).
        maps: feature maps of every convolution (45; 19 narrow).
        pool: (time, frequency) average pooling after the first convolution, or None.
        dilation: dilate convolution i by 2^floor(i/3) (res15).
        num_classes: 12 for the standard task (10 keywords, unknown, silence).
    """

    stage_names = ("conv0", "pool", "blocks", "tail", "fc")

    def __init__(
        self,
        *,
        layers: int,
        maps: int,
        pool: tuple[int, int] | None,
        dilation: bool,
        num_classes: int = 12,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        check_positive("layers", layers)
        check_positive("maps", maps)
        if pool is not None and (len(pool) != 2 or any(int(p) < 1 for p in pool)):
            raise ValueError(f"pool must be None or two positive integers; got {pool!r}")
        self.layers, self.maps = layers, maps
        self.dilations = [2 ** (i // 3) if dilation else 1 for i in range(layers)]
        self.conv0 = conv3x3(1, maps)
        self.pool = nn.AvgPool2d(tuple(pool)) if pool else nn.Identity()
        self.blocks = nn.Sequential(
            *(
                KWSBlock(maps, (self.dilations[2 * j], self.dilations[2 * j + 1]), first=j == 0)
                for j in range(layers // 2)
            )
        )
        # The BN of the last residual sum, and for an odd count one more conv -> ReLU -> BN.
        tail: list[nn.Module] = [_bn(maps)] if layers >= 2 else []
        if layers % 2:
            tail += [conv3x3(maps, maps, dilation=self.dilations[-1]), nn.ReLU(), _bn(maps)]
        self.tail = nn.Sequential(*tail)
        self.num_features = maps
        self.fc = nn.Linear(maps, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv0(x)))
        return self.tail(self.blocks(x))


def kws_resnet(
    *,
    layers: int,
    maps: int,
    pool: tuple[int, int] | None = None,
    dilation: bool = False,
    num_classes: int = 12,
) -> KWSResNet:
    """A Tang & Lin keyword-spotting ResNet; the registered names fix the architecture."""
    return KWSResNet(layers=layers, maps=maps, pool=pool, dilation=dilation, num_classes=num_classes)


def paper_multiplies(
    *, layers: int, maps: int, pool: tuple[int, int] | None, num_classes: int = 12,
    input_size: tuple[int, int] = (101, 40), **_: object,
) -> int:
    """Multiplies as the paper's Table 2 counts them (see the module docstring): each 3x3
    convolution over (H-2)(W-2) positions regardless of dilation, plus the final layer."""
    h, w = input_size
    total = (h - 2) * (w - 2) * 9 * maps  # first convolution, at full resolution
    if pool:
        h, w = h // pool[0], w // pool[1]
    total += layers * (h - 2) * (w - 2) * 9 * maps * maps
    return total + maps * num_classes


# Table 2 of the paper: architecture, parameters (exact counts at 12 classes, which the paper
# rounds to 110K ... 438K), and multiplies as the paper states them.
KWS_CONFIGS = {
    "res8": dict(layers=6, maps=45, pool=(4, 3), dilation=False),
    "res8-narrow": dict(layers=6, maps=19, pool=(4, 3), dilation=False),
    "res15": dict(layers=13, maps=45, pool=None, dilation=True),
    "res15-narrow": dict(layers=13, maps=19, pool=None, dilation=True),
    "res26": dict(layers=24, maps=45, pool=(2, 2), dilation=False),
    "res26-narrow": dict(layers=24, maps=19, pool=(2, 2), dilation=False),
}
_PARAMS = {
    "res8": 110_307,
    "res8-narrow": 19_905,
    "res15": 237_882,
    "res15-narrow": 42_648,
    "res26": 438_357,
    "res26-narrow": 78_387,
}
_PAPER_MULTS = {
    "res8": 30e6,
    "res8-narrow": 5.65e6,
    "res15": 894e6,
    "res15-narrow": 160e6,
    "res26": 380e6,
    "res26-narrow": 68.5e6,
}
# Test accuracy (%) on Google Speech Commands v1, 12 classes (Table 2).
_PAPER_ACCURACY = {
    "res8": 94.1,
    "res8-narrow": 90.1,
    "res15": 95.8,
    "res15-narrow": 94.0,
    "res26": 95.2,
    "res26-narrow": 93.3,
}

for _name, _cfg in KWS_CONFIGS.items():
    register_model(
        _name,
        family="kws_resnet",
        paper=PAPER,
        input_size=(1, 101, 40),
        num_classes=12,
        reference={
            "params": _PARAMS[_name],
            "paper_mults": _PAPER_MULTS[_name],
            "gsc_v1_accuracy": _PAPER_ACCURACY[_name],
        },
        # Half the time and frequency of the MFCC keeps the all-model wiring tests quick.
        test_input_size=(1, 50, 20),
        **_cfg,
    )(kws_resnet)
