"""Any reslearn ImageNet ResNet as the backbone of torchvision's Faster R-CNN (Ren, He, Girshick,
Sun, "Faster R-CNN", NeurIPS 2015, arXiv:1506.01497), in two forms:

* ``"c4"``: as in He et al., "Deep Residual Learning for Image Recognition", CVPR 2016
  (arXiv:1512.03385), Appendix A: conv1 .. conv4_x (``layer1..layer3``, stride 16) are the shared
  backbone of the RPN and the detector; the RoI features are pooled before conv5_1 and all of
  conv5_x (``layer4``) plus global average pooling form the per-region head, followed by the
  classification and box-regression layers. RoIs are pooled to 14x14 so that the stride-2 conv5_1
  gives 7x7 (torchvision's ``RoIAlign``, Mask R-CNN's refinement of the paper's RoI pooling).
  Anchors: 3 scales (128, 256, 512) x 3 aspect ratios, as Faster R-CNN; shorter side 600, longer
  at most 1000 by default.
* ``"fpn"``: Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017
  (arXiv:1612.03144): torchvision's ``BackboneWithFPN`` over ``layer1..layer4`` with an extra
  max-pooled level, torchvision's default FPN anchors (32..512, one size per level), RoIAlign 7x7
  and the two-layer MLP head; shorter side 800, longer at most 1333 by default.

``trainable_layers`` counts stages from the top as torchvision does (0: none, 3: layer2-4, 5: all
including conv1 and its BN). ``frozen_bn`` turns every BatchNorm2d of the ResNet into torchvision's
``FrozenBatchNorm2d`` with the same statistics and affine terms: detection batches are too small
for batch statistics, and He et al. (Appendix A) fix BN to the ImageNet statistics when
fine-tuning. ``num_classes`` counts the background class (torchvision's convention).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from .models.base import check_choice
from .models.pretrained import load_backbone_weights
from .models.resnet import ResNet
from .registry import create_model

__all__ = ["FORMS", "build_faster_rcnn", "freeze_batchnorm", "freeze_stages", "ResNetC4Head"]

FORMS = ("fpn", "c4")
# torchvision's order (`_resnet_fpn_extractor`): the first `trainable_layers` of these train.
_TOP_DOWN = ("layer4", "layer3", "layer2", "layer1", "conv1")
_SIZES = {"fpn": (800, 1333), "c4": (600, 1000)}


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` (in place; the module itself if it is one) by
    ``FrozenBatchNorm2d`` carrying the same running statistics, affine weights and eps."""
    if isinstance(module, nn.BatchNorm2d):
        ref = next(iter(module.buffers()), None)
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps).to(ref.device if ref is not None else "cpu")
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze_stages(resnet: ResNet, trainable_layers: int) -> None:
    """Stop gradients to all but the top ``trainable_layers`` stages (0-5) of ``resnet``."""
    if not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be an integer in 0-5; got {trainable_layers!r}")
    train = list(_TOP_DOWN[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, p in resnet.named_parameters():
        if not any(name == t or name.startswith(t + ".") for t in train):
            p.requires_grad_(False)


def _stage_channels(resnet: ResNet) -> list[int]:
    return [resnet.get_submodule(f"layer{i}")[-1].last_bn.num_features for i in range(1, 5)]


class ResNetC4Head(nn.Module):
    """The per-region head of the C4 form: conv5_x on each pooled RoI, then global average
    pooling (He et al. 2016, Appendix A). ``out_channels`` is conv5_x's width."""

    def __init__(self, layer4: nn.Sequential, out_channels: int) -> None:
        super().__init__()
        self.layer4 = layer4
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.layer4(x), 1), 1)


def build_faster_rcnn(
    backbone: str = "resnet50",
    *,
    form: str = "fpn",
    num_classes: int,
    trainable_layers: int = 3,
    frozen_bn: bool = True,
    min_size: int | None = None,
    max_size: int | None = None,
    fpn_channels: int = 256,
    weights: str | Path | Mapping[str, torch.Tensor] | None = None,
    rcnn_kwargs: dict[str, Any] | None = None,
    **backbone_kwargs: Any,
) -> FasterRCNN:
    """torchvision ``FasterRCNN`` on the registered ImageNet ResNet ``backbone``.

    Args:
        form: ``"fpn"`` or ``"c4"`` (see the module docstring).
        num_classes: object classes plus one for the background.
        trainable_layers: stages that train, from the top (0-5; torchvision's default is 3).
        frozen_bn: BatchNorm2d -> FrozenBatchNorm2d, keeping the statistics and affine terms.
        min_size / max_size: resizing of ``GeneralizedRCNNTransform``; default per form.
        fpn_channels: FPN width (256 in Lin et al.); small values for tiny test models.
        weights: a local ImageNet ResNet state_dict (file or mapping, torchvision layout) loaded
            into the backbone before freezing; nothing is downloaded. Its ``fc`` is skipped.
        rcnn_kwargs: further ``FasterRCNN`` arguments (``rpn_anchor_generator``, thresholds, ...).
        backbone_kwargs: go to the backbone's builder (``width``, ``variant``, ``shortcut``, ...).
    """
    check_choice("form", form, FORMS)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (it counts the background); got {num_classes!r}")
    if not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ValueError(f"fpn_channels must be a positive integer; got {fpn_channels!r}")
    if "num_classes" in backbone_kwargs:
        raise ValueError("num_classes is the detector's; the backbone's classifier is dropped")
    net = create_model(backbone, **backbone_kwargs)
    if type(net) is not ResNet:
        raise ValueError(f"backbone must be an ImageNet ResNet such as 'resnet50'; got {backbone!r}")
    if weights is not None:
        load_backbone_weights(net, weights)
    channels = _stage_channels(net)
    freeze_stages(net, trainable_layers)
    if frozen_bn:
        freeze_batchnorm(net)
    net.fc = nn.Identity()  # the ImageNet classifier has no part in detection
    lo, hi = _SIZES[form]
    kw: dict[str, Any] = {"min_size": min_size or lo, "max_size": max_size or hi, **(rcnn_kwargs or {})}
    if form == "fpn":
        body = BackboneWithFPN(
            net,
            return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
            in_channels_list=channels,
            out_channels=fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        return FasterRCNN(body, num_classes=num_classes, **kw)
    trunk_names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
    trunk = nn.Sequential(OrderedDict((n, net.get_submodule(n)) for n in trunk_names))
    trunk.out_channels = channels[2]  # type: ignore[assignment]
    head = ResNetC4Head(net.layer4, channels[3])
    kw.setdefault("rpn_anchor_generator", AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)))
    kw.setdefault("box_roi_pool", MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=0))
    return FasterRCNN(
        trunk, num_classes=None, box_head=head, box_predictor=FastRCNNPredictor(channels[3], num_classes), **kw
    )
