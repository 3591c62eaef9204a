"""Model families; importing this package registers every model.

One module per family (its blocks, network, depth table and registrations).
"""

from . import resnet, cifar_resnet  # noqa: F401  (registration side effects)
from . import inception_resnet  # noqa: F401  (registration side effects)
from . import drn  # noqa: F401  (registration side effects)
from . import kws_resnet  # noqa: F401  (registration side effects)
from . import wrbn  # noqa: F401  (registration side effects)
from . import age_gender  # noqa: F401  (registration side effects)
from . import preact_resnet  # noqa: F401  (registration side effects)
from . import wide_resnet  # noqa: F401  (registration side effects)
from . import highway  # noqa: F401  (registration side effects)
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
