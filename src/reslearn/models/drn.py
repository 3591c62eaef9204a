"""Steganalysis DRN: Wu, Zhong, Liu, "Deep residual learning for image steganalysis", Multimedia
Tools and Applications (2018), doi:10.1007/s11042-017-4440-4 (we found no arXiv version; the
conference precursor is "Steganalysis via deep residual network", ICPADS 2016).

What the paper fixes and we keep:

* a fixed, non-trainable 1@5x5 high-pass filter in front (the "KV" kernel, see ``KV_KERNEL``),
  so the network sees noise residuals, where the stego signal lives, rather than image content;
* a 64@7x7 convolution, then residual stages whose maps grow from 64 to 512, each stage opened by
  a dimension-increasing block that halves the map (stride 2) and doubles the filters;
* non-bottleneck (two 3x3) and bottleneck (1x1, 3x3, 1x1) residual blocks of He et al. 2016;
* a 1000-unit fully connected layer, then the two-way (cover, stego) output; softmax in the loss;
* 512x512 grayscale BOSSbase images as input.

Where the text available to us is silent (the exact layer table, BN/ReLU order, pooling), we
follow the ImageNet ResNet that DRN is built from (He et al. 2016, Table 1): conv -> BN -> ReLU,
one 3x3/2 max pooling after the 7x7 convolution and none inside the stages (pooling would average
away the weak stego signal), global average pooling before the fc layers, a ReLU between the
1000-unit layer and the output. ``depth`` picks a row of He et al.'s Table 1 (18 and 34 use
non-bottleneck blocks, 50/101/152 bottlenecks); the registered default, depth 50, is our choice,
not a figure we could check in the paper. The network reuses :class:`ResNet` whole: DRN is that
ResNet with one input channel, the fixed filter in front and the two-layer head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import Describable
from ..registry import register_model
from .base import check_num_classes, check_positive
from .resnet import _PARAMS, ResNet, _depth

__all__ = ["KV_KERNEL", "HighPassFilter", "DRN", "kv_weight"]

PAPER = (
    "Wu, Zhong, Liu, Deep residual learning for image steganalysis, "
    "Multimedia Tools and Applications 2018 (doi:10.1007/s11042-017-4440-4)"
)

# The 5x5 "KV" residual kernel of the spatial rich model (Fridrich & Kodovsky, "Rich models for
# steganalysis of digital images", IEEE TIFS 2012), scaled by 1/12 as in Qian et al., "Deep
# learning for steganalysis via convolutional neural networks", SPIE 2015.
KV_KERNEL: tuple[tuple[int, ...], ...] = (
    (-1, 2, -2, 2, -1),
    (2, -6, 8, -6, 2),
    (-2, 8, -12, 8, -2),
    (2, -6, 8, -6, 2),
    (-1, 2, -2, 2, -1),
)
KV_SCALE = 12.0


def kv_weight(dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """The KV filter as a (1, 1, 5, 5) convolution weight."""
    return (torch.tensor(KV_KERNEL, dtype=dtype, device=device) / KV_SCALE).view(1, 1, 5, 5)


class HighPassFilter(nn.Module, Describable):
    """The fixed 1@5x5 high-pass layer ("image processing layer") in front of DRN.

    The kernel is a *persistent buffer*, not a parameter: optimizers, weight decay and
    ``requires_grad_`` never reach it, parameter counts report only what is learned, and it still
    travels in the ``state_dict`` (so a model built on the meta device and then loaded is whole).
    Loading a state_dict whose kernel is not KV raises ``ValueError``: a fixed layer that a
    checkpoint could change would not be fixed. Padding 2 keeps the image size.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", kv_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"the high-pass filter takes 1-channel (grayscale) input; got {x.shape[1]} channels")
        return F.conv2d(x, self.weight.to(x.dtype), padding=2)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "weight"
        if key in state_dict:
            w = state_dict[key]
            if w.device.type != "meta" and not torch.equal(w.detach().float().cpu(), kv_weight()):
                raise ValueError(f"{key}: the DRN high-pass filter is fixed to the KV kernel; refusing another")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def describe(self) -> str:
        return "5x5 KV high-pass, 1 (fixed)"


class DRN(ResNet):
    """DRN for steganalysis (Wu et al. 2018): fixed KV filter, ResNet body, fc 1000, fc 2
    (registered as ``drn_stego``).

    Args:
        depth: row of He et al. 2016 Table 1 for the body (18, 34: non-bottleneck; 50, 101, 152:
            bottleneck blocks).
        num_classes: outputs of the last layer (2: cover, stego).
        hidden: units of the fully connected layer before the output (1000 in the paper).
        variant / width / shortcut: as :class:`ResNet`.

    ``forward_head(x, pre_logits=True)`` returns the ``hidden``-unit activations, so
    ``num_features == hidden``; ``reset_classifier`` replaces only the output layer.
    """

    stage_names = ("hpf", "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc1", "fc")

    def __init__(
        self,
        *,
        depth: int = 50,
        num_classes: int = 2,
        hidden: int = 1000,
        variant: str = "paper",
        width: int = 64,
        shortcut: str = "B",
    ) -> None:
        check_num_classes(num_classes)
        check_positive("hidden", hidden)
        block, layers = _depth(depth)
        super().__init__(
            block, layers, num_classes=hidden, in_chans=1, shortcut=shortcut, variant=variant, width=width
        )
        self.depth = depth
        self.hpf = HighPassFilter()
        # ResNet built `fc` as body -> hidden; it becomes the 1000-unit layer (same init).
        self.fc1 = self.fc
        self.fc = nn.Linear(hidden, num_classes)
        self.num_classes = num_classes
        self.num_features = hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(self.hpf(x))

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) if x.dim() == 4 else x
        x = F.relu(self.fc1(x))
        return x if pre_logits else self.fc(x)


register_model(
    "drn_stego",
    family="drn",
    paper=PAPER,
    input_size=(1, 512, 512),
    num_classes=2,
    # Not stated in the paper. The registered default (depth 50): ResNet-50 of Table 1, conv1 on
    # one channel instead of three (-2 * 7 * 7 * 64), its fc 2048 -> 1000 kept, plus fc 1000 -> 2.
    reference={"params": _PARAMS[50] - 2 * 7 * 7 * 64 + (1000 * 2 + 2)},
    test_input_size=(1, 64, 64),
)(DRN)
