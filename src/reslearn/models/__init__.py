"""Model families; importing this package registers every model.

One module per family (its blocks, network, depth table and registrations).
"""

from . import resnet, cifar_resnet  # noqa: F401  (registration side effects)
from .base import ClassifierModel
from .cifar_resnet import CifarResNet, cifar_plain, cifar_resnet
from .resnet import ResNet, imagenet_plain, imagenet_resnet

__all__ = [
    "ClassifierModel",
    "CifarResNet",
    "ResNet",
    "cifar_plain",
    "cifar_resnet",
    "imagenet_plain",
    "imagenet_resnet",
]
