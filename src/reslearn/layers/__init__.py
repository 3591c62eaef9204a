"""Pieces shared by more than one model family."""

from .blocks import (
    SHORTCUTS,
    BasicBlock,
    Bottleneck,
    ZeroPadShortcut,
    conv1x1,
    conv3x3,
    describe_module,
    he_init,
    make_shortcut,
)

__all__ = [
    "SHORTCUTS",
    "BasicBlock",
    "Bottleneck",
    "ZeroPadShortcut",
    "conv1x1",
    "conv3x3",
    "describe_module",
    "he_init",
    "make_shortcut",
]
