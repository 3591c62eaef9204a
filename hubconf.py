"""torch.hub entry points: ``torch.hub.load("<owner>/reslearn", "resnet50")`` (or a local clone
with ``source="local"``) for every registered model. Keyword arguments go to the builder;
``pretrained=True`` (or a tag) loads reslearn's own trained weights where there are some (see
``reslearn models --pretrained``), from files shipped with the code, checked by SHA-256."""

import os
import sys

dependencies = ["torch", "torchvision"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from reslearn import create_model as _create_model  # noqa: E402
from reslearn import list_models as _list_models  # noqa: E402


def _entry(name):
    def build(**kwargs):
        return _create_model(name, **kwargs)

    build.__name__ = name
    build.__doc__ = f"reslearn model {name!r}; keyword arguments go to its builder."
    return build


# Names with '-' (e.g. res8-narrow) are reachable through torch.hub.load's getattr as they are.
for _name in _list_models():
    globals()[_name] = _entry(_name)
