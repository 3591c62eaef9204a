"""Inception-v4 and Inception-ResNet-v1/v2: Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4,
Inception-ResNet and the Impact of Residual Connections on Learning", AAAI 2017
(arXiv:1602.07261).

All three networks are a stem, three grids of repeated blocks (35x35, 17x17, 8x8 at 299x299)
joined by Reduction-A and Reduction-B, then average pooling, dropout (keep 0.8) and a fc layer
(Fig. 9 for Inception-v4, Fig. 15 for both Inception-ResNets). The blocks are written below as
data in the figures' notation, so each table can be read against its figure:

* ``Conv(out, kernel, stride, valid)`` is one convolution of a figure, followed by BN and ReLU
  as everywhere in the paper's "traditional layers" (Sec. 3.2); ``valid=True`` is the figures'
  "V" (no padding), otherwise the grid size is kept ("same" padding).
* ``MAX`` / ``AVG`` are the figures' 3x3 max pooling (stride 2, V) and average pooling (stride
  1, same).
* a tuple is a chain of layers, ``Cat(...)`` is the figures' "Filter concat" of parallel branches.
* ``BlockSpec(residual=True)`` is an Inception-ResNet block: the concatenation goes through a
  "1x1 Conv (Linear)" back to the input width, is scaled (Sec. 3.3) and added to the input, and a
  ReLU follows the sum (Figs. 10, 11, 13, 16, 17, 19).

Parameter counts at 1000 classes (``tests/test_inception.py`` checks them):

* ``inception_v4``: 42,679,816, equal to timm's ``inception_v4`` (42.68M), a port of Google's
  TF-slim checkpoint. Neither counts an auxiliary classifier (Fig. 9 shows none); convolutions
  that BN follows have no bias; BN has PyTorch's learned scale and shift. (TF-slim's BN learns no
  scale by default, so the TF checkpoint itself holds 31,584 values fewer.)
* ``inception_resnet_v2``: 55,843,464 with ``variant="released"`` (the default), equal to timm's
  55.84M (TF-slim: 30,272 BN scales fewer); ``variant="paper"``: 32,433,928. See
  :func:`inception_resnet_v2` for why the two differ.
* ``inception_resnet_v1``: 22,756,328, derived from the figures alone (stem Fig. 14, blocks
  Figs. 10-13, Reduction-A with k=192, l=192, m=256, n=384, Reduction-B Fig. 12; 5/10/5 blocks,
  Fig. 15); no released model exists to compare with. Sum: stem 615,552; Inception-ResNet-A
  77,440 x 5; Reduction-A 1,710,080; Inception-ResNet-B 690,048 x 10; Reduction-B 3,346,176;
  Inception-ResNet-C 1,600,768 x 5; fc 1,793,000. As in the released Inception-ResNet-v2, each
  residual block's "1x1 Conv (Linear)" has a bias and no BN (BN is used "only on top of the
  traditional layers, but not on top of the summations", Sec. 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence, Union

import torch
import torch.nn as nn

from ..layers import Describable, he_init
from ..registry import register_model
from .base import ClassifierModel, check_choice, check_num_classes, check_positive

__all__ = [
    "AVG",
    "BN_EPS",
    "Cat",
    "Conv",
    "MAX",
    "Pool",
    "BlockSpec",
    "Stage",
    "ConvBNReLU",
    "Concat",
    "InceptionBlock",
    "InceptionNet",
    "REDUCTION_A_KLMN",
    "reduction_a",
    "REPEATS",
    "RESIDUAL_SCALE",
    "IR_V2_VARIANTS",
    "inception_v4",
    "inception_resnet_v1",
    "inception_resnet_v2",
]

PAPER = (
    "Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual Connections on "
    "Learning, AAAI 2017 (arXiv:1602.07261)"
)

# The TF reference implementation's BN epsilon (PyTorch's default is 1e-5).
BN_EPS = 1e-3


# --------------------------------------------------------------------------- the notation
class Conv(NamedTuple):
    """One "k x k Conv (out [stride s] [V])" box of a figure; BN and ReLU follow it."""

    out: int
    kernel: int | tuple[int, int] = 1
    stride: int = 1
    valid: bool = False


class Pool(NamedTuple):
    """A 3x3 pooling box; ``kind`` is ``"max"`` or ``"avg"``. It keeps the channel count."""

    kind: str
    stride: int = 1
    valid: bool = False


@dataclass(frozen=True)
class Cat:
    """The figures' "Filter concat": branches on one input, outputs stacked on channels."""

    branches: tuple

    def __init__(self, *branches: "Spec") -> None:
        object.__setattr__(self, "branches", branches)


Spec = Union[Conv, Pool, Cat, tuple]

MAX = Pool("max", 2, True)  # every max pooling in the paper is "3x3 MaxPool (stride 2 V)"
# "Avg Pooling" in Inception-A/B/C keeps the grid; as the TF reference's SAME pooling, the
# padded border is not counted in the average.
AVG = Pool("avg", 1, False)


@dataclass(frozen=True)
class BlockSpec:
    """One named box of Fig. 9 / Fig. 15: ``title`` names it as the paper does."""

    title: str
    body: Spec
    residual: bool = False


class Stage(NamedTuple):
    """``repeats`` copies of ``block`` under the module name ``name``. ``linear_last``: the last
    copy is a residual block with no ReLU after the sum and scale 1 (the released IR-v2)."""

    name: str
    block: BlockSpec
    repeats: int = 1
    linear_last: bool = False


# --------------------------------------------------------------------------- the figures
# Fig. 3: the stem of Inception-v4 and Inception-ResNet-v2, 299x299x3 -> 35x35x384.
STEM_V4 = BlockSpec(
    "Stem (Fig. 3)",
    (
        Conv(32, 3, 2, valid=True),  # 149x149x32
        Conv(32, 3, valid=True),  # 147x147x32
        Conv(64, 3),  # 147x147x64
        Cat(MAX, Conv(96, 3, 2, valid=True)),  # 73x73x160
        Cat(
            (Conv(64, 1), Conv(96, 3, valid=True)),
            (Conv(64, 1), Conv(64, (7, 1)), Conv(64, (1, 7)), Conv(96, 3, valid=True)),
        ),  # 71x71x192
        # Stride 2 on both sides: the pair halves 71x71 to the 35x35 grid of Figs. 4 and 9.
        Cat(Conv(192, 3, 2, valid=True), MAX),  # 35x35x384
    ),
)

# Fig. 14: the stem of Inception-ResNet-v1, 299x299x3 -> 35x35x256.
STEM_IR_V1 = BlockSpec(
    "Stem (Fig. 14)",
    (
        Conv(32, 3, 2, valid=True),
        Conv(32, 3, valid=True),
        Conv(64, 3),
        MAX,  # 73x73x64
        Conv(80, 1),
        Conv(192, 3, valid=True),  # 71x71x192
        Conv(256, 3, 2, valid=True),  # 35x35x256
    ),
)

# The released Inception-ResNet-v2 (TF-slim, which timm ports) starts like Fig. 14 but pools
# 71x71x192 -> 35x35x192 and widens to 320 with a 5x5 Inception block (TF-slim "Mixed_5b").
STEM_IR_V2_RELEASED = BlockSpec(
    "Stem (released model)",
    (
        *STEM_IR_V1.body[:-1],
        MAX,
        Cat(
            Conv(96, 1),
            (Conv(48, 1), Conv(64, 5)),
            (Conv(64, 1), Conv(96, 3), Conv(96, 3)),
            (AVG, Conv(64, 1)),
        ),  # 35x35x320
    ),
)

# Fig. 4: Inception-A, 35x35x384 -> 35x35x384.
INCEPTION_A = BlockSpec(
    "Inception-A (Fig. 4)",
    Cat(
        (AVG, Conv(96, 1)),
        Conv(96, 1),
        (Conv(64, 1), Conv(96, 3)),
        (Conv(64, 1), Conv(96, 3), Conv(96, 3)),
    ),
)

# Fig. 5: Inception-B, 17x17x1024 -> 17x17x1024.
INCEPTION_B = BlockSpec(
    "Inception-B (Fig. 5)",
    Cat(
        (AVG, Conv(128, 1)),
        Conv(384, 1),
        (Conv(192, 1), Conv(224, (1, 7)), Conv(256, (7, 1))),
        (
            Conv(192, 1),
            Conv(192, (1, 7)),
            Conv(224, (7, 1)),
            Conv(224, (1, 7)),
            Conv(256, (7, 1)),
        ),
    ),
)

# Fig. 6: Inception-C, 8x8x1536 -> 8x8x1536. Two branches end in a 1x3 / 3x1 pair side by side.
INCEPTION_C = BlockSpec(
    "Inception-C (Fig. 6)",
    Cat(
        (AVG, Conv(256, 1)),
        Conv(256, 1),
        (Conv(384, 1), Cat(Conv(256, (1, 3)), Conv(256, (3, 1)))),
        (
            Conv(384, 1),
            Conv(448, (1, 3)),
            Conv(512, (3, 1)),
            Cat(Conv(256, (3, 1)), Conv(256, (1, 3))),
        ),
    ),
)

# Table 1: Reduction-A's filter bank sizes (k, l, m, n) in each network.
REDUCTION_A_KLMN: dict[str, tuple[int, int, int, int]] = {
    "inception_v4": (192, 224, 256, 384),
    "inception_resnet_v1": (192, 192, 256, 384),
    "inception_resnet_v2": (256, 256, 384, 384),
}


def reduction_a(k: int, l: int, m: int, n: int) -> BlockSpec:  # noqa: E741 (the paper's names)
    """Fig. 7: Reduction-A, 35x35 -> 17x17; output width is input + n + m."""
    return BlockSpec(
        f"Reduction-A (Fig. 7, k={k}, l={l}, m={m}, n={n})",
        Cat(
            MAX,
            Conv(n, 3, 2, valid=True),
            (Conv(k, 1), Conv(l, 3), Conv(m, 3, 2, valid=True)),
        ),
    )


# Fig. 8: Inception-v4's Reduction-B, 17x17x1024 -> 8x8x1536.
REDUCTION_B_V4 = BlockSpec(
    "Reduction-B (Fig. 8)",
    Cat(
        MAX,
        (Conv(192, 1), Conv(192, 3, 2, valid=True)),
        (Conv(256, 1), Conv(256, (1, 7)), Conv(320, (7, 1)), Conv(320, 3, 2, valid=True)),
    ),
)


def _reduction_b_ir(figure: int, widths: tuple[int, int, int, int]) -> BlockSpec:
    """Figs. 12 and 18: the Inception-ResNets' Reduction-B, 17x17 -> 8x8; the two differ only in
    the widths (a, b, c, d) of its 3x3 convolutions."""
    a, b, c, d = widths
    return BlockSpec(
        f"Reduction-B (Fig. {figure})",
        Cat(
            MAX,
            (Conv(256, 1), Conv(a, 3, 2, valid=True)),
            (Conv(256, 1), Conv(b, 3, 2, valid=True)),
            (Conv(256, 1), Conv(c, 3), Conv(d, 3, 2, valid=True)),
        ),
    )


REDUCTION_B_IR_V1 = _reduction_b_ir(12, (384, 256, 256, 256))
REDUCTION_B_IR_V2 = _reduction_b_ir(18, (384, 288, 288, 320))


def _ir_a(figure: int, widths: tuple[int, int]) -> BlockSpec:
    """Figs. 10 and 16: Inception-ResNet-A (35x35); the deepest branch's widths differ."""
    return BlockSpec(
        f"Inception-ResNet-A (Fig. {figure})",
        Cat(Conv(32, 1), (Conv(32, 1), Conv(32, 3)), (Conv(32, 1), *(Conv(w, 3) for w in widths))),
        residual=True,
    )


def _ir_factorised(
    name: str, figure: int, n: int, widths: tuple[int, int, int, int]
) -> BlockSpec:
    """Figs. 11/17 (Inception-ResNet-B, n=7) and 13/19 (-C, n=3): a 1x1 branch beside a
    1x1 -> 1xn -> nx1 branch, with widths (1x1, 1x1, 1xn, nx1)."""
    a, b, c, d = widths
    return BlockSpec(
        f"Inception-ResNet-{name} (Fig. {figure})",
        Cat(Conv(a, 1), (Conv(b, 1), Conv(c, (1, n)), Conv(d, (n, 1)))),
        residual=True,
    )


IR_A_V1 = _ir_a(10, (32, 32))
IR_B_V1 = _ir_factorised("B", 11, 7, (128, 128, 128, 128))
IR_C_V1 = _ir_factorised("C", 13, 3, (192, 192, 192, 192))
IR_A_V2 = _ir_a(16, (48, 64))
IR_B_V2 = _ir_factorised("B", 17, 7, (192, 128, 160, 192))
IR_C_V2 = _ir_factorised("C", 19, 3, (192, 192, 224, 256))

# Blocks per grid (35x35, 17x17, 8x8): Fig. 9 and Fig. 15; the released IR-v2 doubles them.
REPEATS: dict[str, tuple[int, int, int]] = {
    "inception_v4": (4, 7, 3),
    "inception_resnet_v1": (5, 10, 5),
    "inception_resnet_v2": (5, 10, 5),
    "inception_resnet_v2/released": (10, 20, 10),
}

# Sec. 3.3 scales residuals by 0.1 to 0.3 before the sum; these per-grid (A, B, C) values are the
# released Inception-ResNet-v2's, used for both Inception-ResNets.
RESIDUAL_SCALE = (0.17, 0.10, 0.20)

IR_V2_VARIANTS = ("released", "paper")


def _grids(
    blocks: tuple[BlockSpec, BlockSpec, BlockSpec],
    reductions: tuple[BlockSpec, BlockSpec],
    repeats: tuple[int, int, int],
    prefix: str,
) -> list[Stage]:
    """Fig. 9 / Fig. 15 below the stem: A-blocks, Reduction-A, B-blocks, Reduction-B, C-blocks."""
    a, b, c = blocks
    ra, rb = reductions
    return [
        Stage(f"{prefix}_a", a, repeats[0]),
        Stage("reduction_a", ra),
        Stage(f"{prefix}_b", b, repeats[1]),
        Stage("reduction_b", rb),
        Stage(f"{prefix}_c", c, repeats[2]),
    ]


# --------------------------------------------------------------------------- modules
class ConvBNReLU(nn.Module, Describable):
    """Conv (no bias: BN's shift replaces it) -> BN (eps 0.001) -> ReLU."""

    def __init__(self, in_ch: int, spec: Conv) -> None:
        super().__init__()
        k = (spec.kernel, spec.kernel) if isinstance(spec.kernel, int) else tuple(spec.kernel)
        padding = (0, 0) if spec.valid else (k[0] // 2, k[1] // 2)
        self.conv = nn.Conv2d(in_ch, spec.out, k, stride=spec.stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(spec.out, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))

    def describe(self) -> str:
        kh, kw = self.conv.kernel_size
        s = self.conv.stride[0]
        return f"{kh}x{kw} {self.conv.out_channels}" + (f"/{s}" if s > 1 else "") + (
            " V" if self.spec.valid else ""
        )


class Concat(nn.Module, Describable):
    """Parallel branches on one input, concatenated along channels ("Filter concat")."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)

    def describe(self) -> str:
        return "[" + " | ".join(_describe(b) for b in self.branches) + "]"


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Sequential):
        return ", ".join(_describe(c) for c in m)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(m, nn.MaxPool2d) else "avg"
        return f"{kind} 3x3" + (f"/{m.stride}" if m.stride > 1 else "") + (
            " V" if m.padding == 0 else ""
        )
    return m.describe()  # ConvBNReLU, Concat


def _build(spec: Spec, in_ch: int) -> tuple[nn.Module, int]:
    """The module for ``spec`` on ``in_ch`` input channels, and its output channels."""
    if isinstance(spec, Conv):
        return ConvBNReLU(in_ch, spec), spec.out
    if isinstance(spec, Pool):
        check_choice("pool kind", spec.kind, ("max", "avg"))
        if spec.kind == "max":
            return nn.MaxPool2d(3, spec.stride, padding=0 if spec.valid else 1), in_ch
        return nn.AvgPool2d(3, spec.stride, padding=0 if spec.valid else 1,
                            count_include_pad=False), in_ch
    if isinstance(spec, Cat):
        built = [_build(b, in_ch) for b in spec.branches]
        return Concat([m for m, _ in built]), sum(c for _, c in built)
    if isinstance(spec, tuple):
        layers = []
        for s in spec:
            m, in_ch = _build(s, in_ch)
            layers.append(m)
        return nn.Sequential(*layers), in_ch
    raise TypeError(f"not a layer spec: {spec!r}")


class InceptionBlock(nn.Module, Describable):
    """One box of Fig. 9 / Fig. 15 built from its :class:`BlockSpec`.

    Plain blocks (stems, Inception-A/B/C, reductions) return their body's output. Residual blocks
    compute ``relu(x + scale * linear_1x1(body(x)))``: the 1x1 conv restores the input width so
    the sum is defined (Sec. 3.2), and scaling the residual down keeps very wide networks from
    "dying" early in training (Sec. 3.3). ``activate=False`` drops the final ReLU.
    """

    def __init__(
        self, spec: BlockSpec, in_ch: int, *, scale: float = 1.0, activate: bool = True
    ) -> None:
        super().__init__()
        self.title, self.residual, self.scale = spec.title, spec.residual, float(scale)
        self.body, body_ch = _build(spec.body, in_ch)
        if spec.residual:
            # "1x1 Conv (Linear)": no ReLU, no BN, so it keeps its bias (as the released IR-v2).
            self.proj = nn.Conv2d(body_ch, in_ch, 1, bias=True)
            self.relu = nn.ReLU(inplace=True) if activate else nn.Identity()
            self.out_channels = in_ch
        else:
            self.out_channels = body_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.body(x)
        return self.relu(x + self.scale * self.proj(self.body(x)))

    def describe(self) -> str:
        text = f"{self.title}: {_describe(self.body)}"
        if self.residual:
            text += f" -> 1x1 {self.out_channels} linear, x{self.scale:g}"
        return text


class InceptionNet(ClassifierModel):
    """A stem and grids of blocks given as :class:`Stage` rows, then average pooling, dropout
    and fc (Figs. 9 and 15).

    Args:
        stages: the network, bottom to top; the builders below hold the paper's tables.
        num_classes: width of the final fc.
        in_chans: input channels.
        drop_rate: dropout before the fc; 0.2 is the figures' "Dropout (keep 0.8)".
        residual_scale: scale of the residuals in the residual stages, one value per stage in
            order (A, B, C grids), each in (0, 1].
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        residual_scale: Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        check_positive("in_chans", in_chans)
        if not isinstance(drop_rate, (int, float)) or not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be a number in [0, 1), got {drop_rate!r}")
        scales = list(residual_scale)
        n_residual = sum(s.block.residual for s in stages)
        if len(scales) != n_residual:
            raise ValueError(
                f"residual_scale needs {n_residual} values (one per residual stage), "
                f"got {len(scales)}"
            )
        ch = in_chans
        for stage in stages:
            scale = scales.pop(0) if stage.block.residual else 1.0
            blocks = []
            for i in range(stage.repeats):
                last = stage.linear_last and i == stage.repeats - 1
                block = InceptionBlock(
                    stage.block, ch, scale=1.0 if last else scale, activate=not last
                )
                ch = block.out_channels
                blocks.append(block)
            self.add_module(stage.name, blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks))
        self._features = tuple(s.name for s in stages)
        self.stage_names = (*self._features, "fc")
        self.num_features = ch
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(ch, num_classes)
        he_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._features:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = super().forward_head(x, pre_logits=True)
        return x if pre_logits else self.fc(self.drop(x))


# --------------------------------------------------------------------------- builders
def _residual_scale(value: float | Sequence[float]) -> tuple[float, float, float]:
    values = (value,) * 3 if isinstance(value, (int, float)) else value
    if not isinstance(values, (tuple, list)) or len(values) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in values
    ):
        raise ValueError(
            "residual_scale must be a number in (0, 1] or three of them (A, B, C grids); "
            f"got {value!r}"
        )
    return tuple(values)  # type: ignore[return-value]


def inception_v4(
    *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2
) -> InceptionNet:
    """Inception-v4 (Fig. 9): Stem (Fig. 3), 4 x Inception-A, Reduction-A (k, l, m, n = 192,
    224, 256, 384), 7 x Inception-B, Reduction-B (Fig. 8), 3 x Inception-C."""
    reps = REPEATS["inception_v4"]
    stages = [
        Stage("stem", STEM_V4),
        *_grids(
            (INCEPTION_A, INCEPTION_B, INCEPTION_C),
            (reduction_a(*REDUCTION_A_KLMN["inception_v4"]), REDUCTION_B_V4),
            reps,
            "inception",
        ),
    ]
    return InceptionNet(stages, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)


def inception_resnet_v1(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    residual_scale: float | tuple[float, float, float] = RESIDUAL_SCALE,
) -> InceptionNet:
    """Inception-ResNet-v1 (Fig. 15): Stem (Fig. 14), 5 x Inception-ResNet-A (Fig. 10),
    Reduction-A (k, l, m, n = 192, 192, 256, 384), 10 x Inception-ResNet-B (Fig. 11),
    Reduction-B (Fig. 12), 5 x Inception-ResNet-C (Fig. 13). Widths 256, 896, 1792 as Fig. 15.

    ``residual_scale``: one number or one per grid (A, B, C), each in (0, 1]; Sec. 3.3 advises
    0.1 to 0.3. 22,756,328 parameters at 1000 classes (see the module docstring).
    """
    stages = [
        Stage("stem", STEM_IR_V1),
        *_grids(
            (IR_A_V1, IR_B_V1, IR_C_V1),
            (reduction_a(*REDUCTION_A_KLMN["inception_resnet_v1"]), REDUCTION_B_IR_V1),
            REPEATS["inception_resnet_v1"],
            "inception_resnet",
        ),
    ]
    return InceptionNet(
        stages,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        residual_scale=_residual_scale(residual_scale),
    )


def inception_resnet_v2(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    residual_scale: float | tuple[float, float, float] = RESIDUAL_SCALE,
    variant: str = "released",
) -> InceptionNet:
    """Inception-ResNet-v2: Inception-ResNet-A/B/C of Figs. 16, 17, 19, Reduction-A with
    k, l, m, n = 256, 256, 384, 384, Reduction-B of Fig. 18.

    ``variant="paper"`` follows the figures literally: Stem of Fig. 3, 5/10/5 blocks (Fig. 15).
    The figures cannot all hold: Fig. 17's residual output "1154" and Fig. 19's "2048" differ
    from the widths their inputs have (1152 after Reduction-A, 2144 after Reduction-B), and a sum
    needs equal widths, so this variant takes 1152 and 2144. 32,433,928 parameters.

    ``variant="released"`` (default) is the network Google released with the paper (TF-slim,
    ported by timm as ``inception_resnet_v2``, 55,843,464 parameters, the 55.84M usually quoted):
    the stem of :data:`STEM_IR_V2_RELEASED` (35x35x320), 10/20/10 blocks at widths 320, 1088,
    2080 with the same branch widths as the figures, the last Inception-ResNet-C without ReLU and
    scale, and a final "1x1 Conv 1536" (BN, ReLU) before pooling.

    ``residual_scale``: one number or one per grid (A, B, C), each in (0, 1]; the default
    (0.17, 0.10, 0.20) is the released model's, within Sec. 3.3's 0.1 to 0.3.
    """
    check_choice("variant", variant, IR_V2_VARIANTS)
    scales = _residual_scale(residual_scale)
    klmn = REDUCTION_A_KLMN["inception_resnet_v2"]
    grids = _grids(
        (IR_A_V2, IR_B_V2, IR_C_V2),
        (reduction_a(*klmn), REDUCTION_B_IR_V2),
        REPEATS["inception_resnet_v2" if variant == "paper" else "inception_resnet_v2/released"],
        "inception_resnet",
    )
    if variant == "paper":
        stages = [Stage("stem", STEM_V4), *grids]
    else:
        grids[-1] = grids[-1]._replace(linear_last=True)
        head = BlockSpec("1x1 conv (released model)", Conv(1536, 1))
        stages = [Stage("stem", STEM_IR_V2_RELEASED), *grids, Stage("conv_head", head)]
    return InceptionNet(
        stages,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        residual_scale=scales,
    )


# --------------------------------------------------------------------------- registrations
# 75x75 is the smallest input every stem and reduction accepts (75 -> 35 after the first three
# convs, ... -> 3x3 after the stem, 1x1 after Reduction-B); tests/test_inception.py checks it.
_TEST_SIZE = (3, 75, 75)
_PARAMS = {
    "inception_v4": 42_679_816,
    "inception_resnet_v1": 22_756_328,
    "inception_resnet_v2": 55_843_464,
}
for _name, _builder in (
    ("inception_v4", inception_v4),
    ("inception_resnet_v1", inception_resnet_v1),
    ("inception_resnet_v2", inception_resnet_v2),
):
    register_model(
        _name,
        family="inception_resnet",
        paper=PAPER,
        input_size=(3, 299, 299),
        num_classes=1000,
        reference={"params": _PARAMS[_name]},
        test_input_size=_TEST_SIZE,
    )(_builder)
