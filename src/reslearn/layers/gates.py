"""Sigmoid gates, shared by highway layers (Srivastava, Greff & Schmidhuber, "Training Very Deep
Networks", NIPS 2015, arXiv:1507.06228, Sec. 2) and the gated shortcuts that He et al. ablate
("Identity Mappings in Deep Residual Networks", ECCV 2016, arXiv:1603.05027, Sec. 3.1, Fig. 2c-d).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SigmoidGate"]


class SigmoidGate(nn.Module):
    """g(x) = sigmoid(W x + b) with ``W`` a linear or convolutional ``layer`` (which must have a
    bias) and ``b`` initialised to ``bias_init``.

    A negative ``bias_init`` starts a highway layer close to carrying its input (Srivastava et al.,
    Sec. 2.2) and a gated shortcut close to the identity (He et al., Table 1: b_g = -6).
    Initialisers that zero every bias (``he_init``) must be followed by :meth:`reset_bias`.
    """

    def __init__(self, layer: nn.Linear | nn.Conv2d, bias_init: float) -> None:
        super().__init__()
        if layer.bias is None:
            raise ValueError("SigmoidGate needs a layer with a bias (the gate bias b)")
        self.layer = layer
        self.bias_init = float(bias_init)
        self.reset_bias()

    def reset_bias(self) -> None:
        nn.init.constant_(self.layer.bias, self.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layer(x))

    def extra_repr(self) -> str:
        return f"bias_init={self.bias_init}"
