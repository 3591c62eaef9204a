"""Age and gender from faces with three residual networks: Lee et al., "Age and gender
estimation using deep residual learning network", International Workshop on Advanced Image
Technology (IWAIT) 2018.

The method: three ResNet-50s (He et al. 2016), each with its 1000-way layer replaced by a single
output unit: one for gender, one for the age of women, one for the age of men. The gender network
is trained with a logistic loss; each age network by regression with the mean absolute error, on
the images of its own gender only. At test time the two ages are mixed by the gender posterior:

    age = P(female | x) * age_female(x) + P(male | x) * age_male(x).

Output convention (``forward(x)``): a (B, 3) tensor ``[gender logit, female age, male age]``, the
logit of P(female) (UTKFace labels 1 = female, 0 = male); :meth:`AgeGenderNet.combine` applies
the formula above. ``forward_features`` gives the three networks' pooled features side by side
(B, 3F) and ``forward_head`` applies the three 1-unit layers to their own thirds, so the
ClassifierModel interface holds; ``reset_classifier(n)`` replaces the three heads with one
n-way layer over all 3F features (for reuse as a plain classifier).

No pretrained weights can be fetched here: :func:`load_imagenet_weights` loads a torchvision
ResNet file you already have (``.pth`` with ``torch.load(weights_only=True)``, or
``.safetensors``) into each of the three networks; build with ``variant="v1.5"`` to match
torchvision's stride placement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from ..registry import create_model, model_info, register_model
from .base import ClassifierModel, check_num_classes
from .pretrained import load_backbone_weights, read_state_dict
from .resnet import _PARAMS, ResNet, imagenet_plain, imagenet_resnet

__all__ = ["AgeGenderNet", "load_imagenet_weights", "NETS"]

PAPER = "Lee et al., Age and gender estimation using deep residual learning network, IWAIT 2018"

# The three networks, in output order.
NETS = ("gender", "age_female", "age_male")


class AgeGenderNet(ClassifierModel):
    """Three ImageNet ResNets with 1-unit outputs: gender logit, female age, male age
    (registered as ``age_gender_resnet50``).

    Args:
        backbone: a registered ImageNet ResNet (``"resnet50"`` in the paper; ``"resnet18"`` etc.
            for small budgets; ``"plain18"``/``"plain34"`` work too).
        num_classes: must be 3 (the three outputs); use ``reset_classifier`` for another head.
        in_chans, width, variant: passed to each backbone (``width`` < 64 makes tiny test nets).
        age_bias: initial bias of the two age outputs. 0 as in a fresh layer; setting it to the
            training set's mean age (not in the paper) starts the regression at the mean.
    """

    stage_names = NETS
    # The training forward runs each age network on its own gender's images only; a batch (or a
    # DDP rank's shard) of one gender leaves the other network without gradients.
    ddp_find_unused_parameters = True

    def __init__(
        self,
        *,
        backbone: str = "resnet50",
        num_classes: int = 3,
        in_chans: int = 3,
        width: int = 64,
        variant: str = "paper",
        age_bias: float = 0.0,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if num_classes != 3:
            raise ValueError(
                f"num_classes must be 3 (gender logit, female age, male age); got {num_classes}"
            )
        if model_info(backbone).builder not in (imagenet_resnet, imagenet_plain):
            raise ValueError(f"backbone must be an ImageNet ResNet such as 'resnet50'; got {backbone!r}")
        nets = [
            create_model(backbone, num_classes=1, in_chans=in_chans, width=width, variant=variant)
            for _ in NETS
        ]
        for name, net in zip(NETS, nets):
            self.add_module(name, net)
        for net in (self.age_female, self.age_male):
            nn.init.constant_(net.fc.bias, float(age_bias))
        self.backbone_name = backbone
        self.branch_features = nets[0].num_features
        self.num_features = 3 * self.branch_features
        self.num_classes = 3
        self.register_module("fc", None)  # None: the paper's three 1-unit heads are in use

    def nets(self) -> list[ResNet]:
        return [self.get_submodule(n) for n in NETS]  # type: ignore[misc]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net.forward_head(net.forward_features(x), pre_logits=True) for net in self.nets()], 1)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x
        if self.fc is not None:
            return self.fc(x)
        parts = x.split(self.branch_features, dim=1)
        return torch.cat([net.fc(p) for net, p in zip(self.nets(), parts)], 1)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the three 1-unit heads by one ``num_classes``-way layer over all features."""
        self.num_classes = check_num_classes(num_classes)
        device = self.gender.fc.weight.device
        self.fc = nn.Linear(self.num_features, num_classes, device=device)

    @staticmethod
    def combine(out: torch.Tensor) -> torch.Tensor:
        """Final age (B,) from ``forward``'s (B, 3): P(female) age_f + P(male) age_m."""
        p_female = torch.sigmoid(out[:, 0])
        return p_female * out[:, 1] + (1.0 - p_female) * out[:, 2]

    def forward(self, x: torch.Tensor, female: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3) ``[gender logit, female age, male age]``; with ``female`` (bool (B,), the true
        genders) the training forward of the paper instead, (B, 2) ``[gender logit, age from the
        true gender's network]``: the gender network sees every image, each age network only the
        images of its gender, so its gradients *and* its BN statistics come from that gender
        alone. (Under DDP a batch without one gender leaves that network unused: build DDP with
        ``find_unused_parameters=True``.)"""
        if female is None:
            if self.fc is None:  # == forward_head(forward_features(x)), through each net's __call__
                return torch.cat([net(x) for net in self.nets()], 1)
            return self.forward_head(self.forward_features(x))
        if self.fc is not None:
            raise RuntimeError("the training forward needs the paper's heads; reset_classifier replaced them")
        female = female.bool()
        logit = self.gender(x)[:, 0]
        age = x.new_zeros(len(x), dtype=logit.dtype)
        for net, mask in ((self.age_female, female), (self.age_male, ~female)):
            idx = mask.nonzero().flatten()
            if len(idx):
                age = age.index_copy(0, idx, net(x.index_select(0, idx))[:, 0].to(age.dtype))
        return torch.stack([logit, age], 1)


def load_imagenet_weights(model: AgeGenderNet, weights: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Load one local torchvision-layout ResNet state_dict (or file) into all three networks; the
    1000-way ``fc`` is skipped (each network keeps its fresh 1-unit layer)."""
    sd = read_state_dict(weights) if isinstance(weights, (str, Path)) else weights
    for net in model.nets():
        load_backbone_weights(net, sd)


register_model(
    "age_gender_resnet50",
    family="age_gender",
    paper=PAPER,
    input_size=(3, 224, 224),
    num_classes=3,
    # Not stated in the paper: three ResNet-50s (Table 1 count) with 2048 -> 1 instead of 2048 -> 1000.
    reference={"params": 3 * (_PARAMS[50] - (2048 * 1000 + 1000) + (2048 + 1))},
    test_input_size=(3, 64, 64),
    task="regression",
)(AgeGenderNet)
