"""Pre-activation ResNets and the unit ablations of He, Zhang, Ren, Sun, "Identity Mappings in
Deep Residual Networks", ECCV 2016 (arXiv:1603.05027).

* CIFAR (Sec. 4-5, Tables 1-4): a 3x3 conv, three stages of Residual Units on 32x32, 16x16 and
  8x8 maps, global average pooling, fc. ``preact_resnet110`` has 6n+2 layers of basic units
  (16/32/64 filters); ``preact_resnet164`` and ``preact_resnet1001`` have 9n+2 layers of
  bottleneck units (16/32/64 inside, 64/128/256 out), as the authors' code
  (github.com/KaimingHe/resnet-1k-layers): stride in the first 1x1, 1x1-conv projections where
  the shape changes, taken from the shared pre-activation.
* ImageNet (Sec. 5, Table 5): the layer table of He et al. 2016a (Table 1) with full
  pre-activation units, plus ResNet-200 (3, 24, 36, 3).
* Ablations on the ORIGINAL (post-activation) unit: the shortcut functions of Table 1 / Fig. 2
  (``shortcut_type``) and the activation orderings of Table 2 / Fig. 4 (``ordering``), e.g.
  ``create_model("resnet110_ablation", shortcut_type="exclusive_gating", gate_bias=-6.0)``.

First and last unit (Sec. 4.1): the first unit's pre-activation is the BN-ReLU right after conv1
(``bn1``), before the split into two paths; after the last unit comes an extra BN-ReLU
(``final_act``) before pooling.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn

from ..layers import (
    ORDERINGS,
    SHORTCUT_TYPES,
    BasicBlock,
    BasicUnit,
    BNReLU,
    BottleneckUnit,
    ResidualUnit,
    SigmoidGate,
    he_init,
)
from ..registry import register_model
from .base import ClassifierModel, check_choice, check_num_classes, check_positive
from .resnet import DEPTHS as _V1_DEPTHS
from .resnet import VARIANTS

__all__ = [
    "PreActResNet",
    "IMAGENET_DEPTHS",
    "TABLE1_CIFAR10_ERROR",
    "TABLE2_CIFAR10_ERROR",
    "preact_cifar_resnet",
    "preact_imagenet_resnet",
    "units_per_stage",
]

PAPER = (
    "He, Zhang, Ren, Sun, Identity Mappings in Deep Residual Networks, ECCV 2016 "
    "(arXiv:1603.05027)"
)

BLOCKS: dict[str, type[ResidualUnit]] = {"basic": BasicUnit, "bottleneck": BottleneckUnit}

# ImageNet depth -> (unit, units per stage): He et al. 2016a Table 1, and ResNet-200 (Sec. 5).
IMAGENET_DEPTHS: dict[int, tuple[type[ResidualUnit], tuple[int, int, int, int]]] = {
    **{
        d: (BasicUnit if block is BasicBlock else BottleneckUnit, layers)
        for d, (block, layers) in _V1_DEPTHS.items()
    },
    200: (BottleneckUnit, (3, 24, 36, 3)),
}

# Table 1 (ResNet-110 on CIFAR-10, original unit, median of 5 runs): (shortcut_type, options,
# scale on the shortcut, scale on F, test error % or None where training "fail"ed).
TABLE1_CIFAR10_ERROR: tuple[tuple[str, dict[str, float], str, str, float | None], ...] = (
    ("original", {}, "1", "1", 6.61),
    ("constant_scaling", {"shortcut_scale": 0.0, "residual_scale": 1.0}, "0", "1", None),
    ("constant_scaling", {"shortcut_scale": 0.5, "residual_scale": 1.0}, "0.5", "1", None),
    ("constant_scaling", {"shortcut_scale": 0.5, "residual_scale": 0.5}, "0.5", "0.5", 12.35),
    *(
        ("exclusive_gating", {"gate_bias": float(b)}, "1-g(x)", "g(x)", None)
        for b in range(0, -6, -1)  # "fail" for every b_g from 0 to -5
    ),
    ("exclusive_gating", {"gate_bias": -6.0}, "1-g(x)", "g(x)", 8.70),
    ("exclusive_gating", {"gate_bias": -7.0}, "1-g(x)", "g(x)", 9.81),
    ("shortcut_only_gating", {"gate_bias": 0.0}, "1-g(x)", "1", 12.86),
    ("shortcut_only_gating", {"gate_bias": -6.0}, "1-g(x)", "1", 6.91),
    ("conv_shortcut", {}, "1x1 conv", "1", 12.22),
    ("dropout_shortcut", {"shortcut_dropout": 0.5}, "dropout 0.5", "1", None),
)

# Table 2: CIFAR-10 test error (%) of ResNet-110 and ResNet-164 for each ordering of Fig. 4.
TABLE2_CIFAR10_ERROR: dict[str, dict[int, float]] = {
    "original": {110: 6.61, 164: 5.93},
    "bn_after_addition": {110: 8.17, 164: 6.50},
    "relu_before_addition": {110: 7.84, 164: 6.14},
    "relu_only_preact": {110: 6.71, 164: 5.91},
    "full_preact": {110: 6.37, 164: 5.46},
}

_GATED = ("exclusive_gating", "shortcut_only_gating")
_SCALED = ("constant_scaling",)


class PreActResNet(ClassifierModel):
    """A stem, stages of Residual Units, the final activation, global average pooling and fc.

    Args:
        unit: ``BasicUnit`` or ``BottleneckUnit``.
        layers: units per stage; stage ``i > 0`` halves the map size.
        widths: ``planes`` of each stage (units output ``planes * unit.expansion`` channels).
        stem: ``"cifar"`` (3x3 conv) or ``"imagenet"`` (7x7/2 conv and 3x3/2 max pool).
        stem_width: channels of conv1.
        num_classes: width of the final fc.
        in_chans: input channels.
        **unit_kwargs: passed to every unit (``ordering``, ``shortcut``, ``shortcut_type``,
            ``dropout``, ``stride_in_1x1``, gate and scaling options); see ``ResidualUnit``.
    """

    def __init__(
        self,
        unit: type[ResidualUnit],
        layers: tuple[int, ...],
        *,
        widths: tuple[int, ...],
        stem: str = "cifar",
        stem_width: int = 16,
        num_classes: int = 10,
        in_chans: int = 3,
        **unit_kwargs: Any,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        check_positive("in_chans", in_chans)
        check_positive("stem_width", stem_width)
        check_choice("stem", stem, ("cifar", "imagenet"))
        if len(layers) != len(widths) or any(n < 1 for n in layers):
            raise ValueError(f"layers must be positive unit counts, one per width; got {layers!r}")
        ordering = unit_kwargs.get("ordering", "full_preact")
        self.ordering = ordering
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=False)
        # For the pre-activation orderings this BN-ReLU is the first unit's pre-activation.
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else None
        in_ch = stem_width
        names = []
        for i, (n, planes) in enumerate(zip(layers, widths)):
            units = []
            for j in range(n):
                units.append(
                    unit(
                        in_ch,
                        planes,
                        stride=2 if (i > 0 and j == 0) else 1,
                        preact=not (i == 0 and j == 0),
                        **unit_kwargs,
                    )
                )
                in_ch = planes * unit.expansion
            names.append(f"layer{i + 1}")
            self.add_module(names[-1], nn.Sequential(*units))
        self._layer_names = tuple(names)
        # Units without an activation after the addition need one before pooling (Sec. 4.1).
        self.final_act: nn.Module | None = (
            BNReLU(in_ch)
            if ordering == "full_preact"
            else nn.ReLU(inplace=True) if ordering == "relu_only_preact" else None
        )
        self.stage_names = (
            ("conv1",)
            + (("maxpool",) if self.maxpool is not None else ())
            + self._layer_names
            + (("final_act",) if self.final_act is not None else ())
            + ("fc",)
        )
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, num_classes)
        he_init(self)
        for m in self.modules():
            if isinstance(m, SigmoidGate):  # he_init zeroes conv biases; b_g is part of Table 1
                m.reset_bias()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for name in self._layer_names:
            x = getattr(self, name)(x)
        return x if self.final_act is None else self.final_act(x)


def units_per_stage(depth: int, *, layers_per_unit: int, extra: int) -> int:
    """n for a three-stage net of depth ``3 * layers_per_unit * n + extra`` (6n+2, 9n+2, 6n+4)."""
    per = 3 * layers_per_unit
    if (
        not isinstance(depth, int)
        or isinstance(depth, bool)
        or depth < per + extra
        or (depth - extra) % per
    ):
        examples = ", ".join(str(per * n + extra) for n in (1, 2, 3))
        raise ValueError(
            f"depth must be {per}n+{extra} with n >= 1 ({examples}, ...); got {depth!r}"
        )
    return (depth - extra) // per


def _only_for(
    name: str, value: float | None, default: float, shortcut_type: str, types: tuple
) -> float:
    """An ablation option: refused with a shortcut type it does not belong to."""
    if value is None:
        return default
    if shortcut_type not in types:
        raise ValueError(
            f"{name} applies only to shortcut_type {' or '.join(map(repr, types))}; "
            f"got shortcut_type={shortcut_type!r}"
        )
    return float(value)


def preact_cifar_resnet(
    *,
    depth: int,
    block: str = "basic",
    ordering: str = "full_preact",
    shortcut_type: str = "original",
    shortcut: str | None = None,
    gate_bias: float | None = None,
    shortcut_scale: float | None = None,
    residual_scale: float | None = None,
    shortcut_dropout: float | None = None,
    num_classes: int = 10,
    in_chans: int = 3,
    width: int = 16,
) -> PreActResNet:
    """CIFAR ResNet of He et al. 2016b: ``depth`` = 6n+2 (``block="basic"``) or 9n+2
    (``"bottleneck"``), any unit ordering of Table 2 and, on the original unit, any shortcut of
    Table 1.

    Args:
        depth: 6n+2 for basic units (110), 9n+2 for bottleneck units (164, 1001).
        block: ``"basic"`` or ``"bottleneck"``.
        ordering: one of ``ORDERINGS`` (Fig. 4); ``"full_preact"`` is the proposed unit.
        shortcut_type: one of ``SHORTCUT_TYPES`` (Fig. 2); other than ``"original"`` it needs
            ``ordering="original"``, the unit Table 1 modifies.
        shortcut: where the shape changes, ``"A"`` (zero-padding; default for basic units, as
            ResNet-110 of He et al. 2016a) or ``"B"`` (1x1 projection; default for bottlenecks,
            as the authors' code).
        gate_bias: initial b_g of the gated shortcuts (default -6, Table 1's best).
        shortcut_scale, residual_scale: constants of ``"constant_scaling"`` (default 0.5, 0.5).
        shortcut_dropout: dropout probability of ``"dropout_shortcut"`` (default 0.5).
        num_classes, in_chans: classes (10 for CIFAR-10) and input channels.
        width: filters of the first stage (16 in the paper; 32 and 64 follow).
    """
    check_choice("block", block, tuple(BLOCKS))
    check_choice("ordering", ordering, ORDERINGS)
    check_choice("shortcut_type", shortcut_type, SHORTCUT_TYPES)
    if shortcut_type != "original" and ordering != "original":
        raise ValueError(
            f"shortcut_type={shortcut_type!r} is defined on the original unit (Table 1); "
            f"use ordering='original', got ordering={ordering!r}"
        )
    unit = BLOCKS[block]
    shortcut = shortcut if shortcut is not None else ("A" if block == "basic" else "B")
    check_choice("shortcut", shortcut, ("A", "B"))
    check_positive("width", width)
    n = units_per_stage(depth, layers_per_unit=len(unit.kernels), extra=2)
    p = _only_for("shortcut_dropout", shortcut_dropout, 0.5, shortcut_type, ("dropout_shortcut",))
    if not 0.0 <= p < 1.0:
        raise ValueError(f"shortcut_dropout must be in [0, 1); got {shortcut_dropout!r}")
    return PreActResNet(
        unit,
        (n, n, n),
        widths=(width, 2 * width, 4 * width),
        stem="cifar",
        stem_width=width,
        num_classes=num_classes,
        in_chans=in_chans,
        ordering=ordering,
        shortcut=shortcut,
        shortcut_type=shortcut_type,
        gate_bias=_only_for("gate_bias", gate_bias, -6.0, shortcut_type, _GATED),
        shortcut_scale=_only_for("shortcut_scale", shortcut_scale, 0.5, shortcut_type, _SCALED),
        residual_scale=_only_for("residual_scale", residual_scale, 0.5, shortcut_type, _SCALED),
        shortcut_dropout=p,
    )


def preact_imagenet_resnet(
    *,
    depth: int,
    num_classes: int = 1000,
    in_chans: int = 3,
    variant: str = "paper",
    width: int = 64,
) -> PreActResNet:
    """Pre-activation ResNet-``depth`` for ImageNet (18, 34, 50, 101, 152, 200; Sec. 5).

    The stem (conv1, bn1, relu, maxpool) and the stage layout are He et al. 2016a's Table 1; units
    are full pre-activation with 1x1-conv projections where the shape changes. ``variant``:
    ``"paper"`` strides a bottleneck's first 1x1, ``"v1.5"`` its 3x3 (as fb.resnet.torch).
    """
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(
            f"depth must be one of {', '.join(map(str, IMAGENET_DEPTHS))}; got {depth!r}"
        )
    check_choice("variant", variant, VARIANTS)
    check_positive("width", width)
    unit, layers = IMAGENET_DEPTHS[depth]
    return PreActResNet(
        unit,
        layers,
        widths=tuple(width * 2**i for i in range(4)),
        stem="imagenet",
        stem_width=width,
        num_classes=num_classes,
        in_chans=in_chans,
        shortcut="B",
        stride_in_1x1=variant == "paper",
    )


# --------------------------------------------------------------------------- registrations
# Exact counts (bias-free convs, as the authors' code; fc with bias). The paper's figures
# (Tables 3-4) round the weight layers alone: ResNet-1001 has 10,178,490 conv and fc parameters
# (10.2M) and 149,216 BN scales and shifts on top (10.3M in all).
_CIFAR_PARAMS = {110: 1_727_962, 164: 1_703_258, 1001: 10_327_706}
_CIFAR_PAPER_PARAMS = {110: 1.7e6, 164: 1.7e6, 1001: 10.2e6}
# Table 3: CIFAR-10 / CIFAR-100 test error (%), pre-activation units, median of 5 runs.
_CIFAR10_ERROR = {110: 6.37, 164: 5.46, 1001: 4.92}
_CIFAR100_ERROR = {164: 24.33, 1001: 22.71}

# ResNet-1001's wiring test runs at 8x8 (two stride-2 stages leave 2x2): 1001 layers are slow.
_CIFAR_NETS = ((110, "basic", None), (164, "bottleneck", None), (1001, "bottleneck", (3, 8, 8)))
for _d, _block, _test in _CIFAR_NETS:
    register_model(
        f"preact_resnet{_d}",
        family="preact_resnet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        reference={
            "params": _CIFAR_PARAMS[_d],
            "paper_params": _CIFAR_PAPER_PARAMS[_d],
            "cifar10_error": _CIFAR10_ERROR[_d],
            **({"cifar100_error": _CIFAR100_ERROR[_d]} if _d in _CIFAR100_ERROR else {}),
            # README of the authors' code: 4.62% with mini-batch 64 instead of 128.
            **({"cifar10_error_batch64": 4.62} if _d == 1001 else {}),
        },
        test_input_size=_test,
        depth=_d,
        block=_block,
    )(preact_cifar_resnet)

# Entry points of the ablations: the original unit of He et al. 2016a by default; pass
# ``shortcut_type=`` (Table 1) or ``ordering=`` (Table 2). A partial keeps ``ordering`` overridable
# (the registry's bound defaults are not).
_ABLATION_PARAMS = {110: 1_727_962, 164: 1_704_154}
for _d, _block in ((110, "basic"), (164, "bottleneck")):
    register_model(
        f"resnet{_d}_ablation",
        family="preact_resnet",
        paper=PAPER + ", Tables 1-2",
        input_size=(3, 32, 32),
        num_classes=10,
        reference={
            "params": _ABLATION_PARAMS[_d],
            "table2_cifar10_error": {k: v[_d] for k, v in TABLE2_CIFAR10_ERROR.items()},
            **({"table1_cifar10_error": TABLE1_CIFAR10_ERROR} if _d == 110 else {}),
        },
        depth=_d,
        block=_block,
    )(functools.partial(preact_cifar_resnet, ordering="original"))

_IMAGENET_PARAMS = {
    18: 11_687_720,
    34: 21_795_880,
    50: 25_549_352,
    101: 44_541_480,
    152: 60_185_128,
    200: 64_666_152,
}
# Table 5: single 320x320 crop, ImageNet val, (top-1, top-5) error (%).
_TABLE5_ERROR = {152: (21.1, 5.5), 200: (20.7, 5.3)}

for _d in IMAGENET_DEPTHS:
    register_model(
        f"preact_resnet{_d}",
        family="preact_resnet",
        paper=PAPER,
        input_size=(3, 224, 224),
        num_classes=1000,
        reference={
            "params": _IMAGENET_PARAMS[_d],
            **({"imagenet_top1_top5_error_320": _TABLE5_ERROR[_d]} if _d in _TABLE5_ERROR else {}),
        },
        test_input_size=(3, 64, 64),
        depth=_d,
    )(preact_imagenet_resnet)
