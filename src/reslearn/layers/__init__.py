"""Pieces shared by more than one model family."""

from .blocks import (
    SHORTCUTS,
    BasicBlock,
    Bottleneck,
    ZeroPadShortcut,
    conv1x1,
    conv3x3,
    Describable,
    describe_module,
    he_init,
    make_shortcut,
)
from .gates import SigmoidGate
from .preact import (
    ORDERINGS,
    PREACT_ORDERINGS,
    SHORTCUT_TYPES,
    BasicUnit,
    BNReLU,
    BottleneckUnit,
    ResidualUnit,
)

__all__ = [
    "SHORTCUTS",
    "BasicBlock",
    "Bottleneck",
    "ZeroPadShortcut",
    "conv1x1",
    "conv3x3",
    "Describable",
    "describe_module",
    "he_init",
    "make_shortcut",
    "ORDERINGS",
    "PREACT_ORDERINGS",
    "SHORTCUT_TYPES",
    "BasicUnit",
    "BNReLU",
    "BottleneckUnit",
    "ResidualUnit",
    "SigmoidGate",
]
