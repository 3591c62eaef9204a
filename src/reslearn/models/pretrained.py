"""ImageNet weights from a local file into a reslearn ResNet (torchvision's key layout).

Nothing is downloaded here: pass a file you have, a torchvision ``resnet50-*.pth`` (read with
``torch.load(weights_only=True)``, which refuses pickled code) or a ``.safetensors`` file. Note
that torchvision's ResNets are "v1.5" (stride in the 3x3 of a bottleneck): build the reslearn
model with ``variant="v1.5"`` to compute what torchvision computes with those weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import ReslearnError

__all__ = ["read_state_dict", "load_backbone_weights"]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file, on the CPU; a ``{"state_dict": ...}``
    or ``{"model": ...}`` wrapper and DataParallel's ``module.`` prefix are removed."""
    path = Path(path)
    if not path.is_file():
        raise ReslearnError(f"weights file {path} does not exist (no weights can be downloaded here)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: object = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled code refused by weights_only, ...
        raise ReslearnError(f"cannot read weights {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ReslearnError(f"{path} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_backbone_weights(
    model: nn.Module, weights: str | Path | Mapping[str, torch.Tensor], *, skip: tuple[str, ...] = ("fc.",)
) -> None:
    """Load ImageNet weights into ``model`` except the keys starting with ``skip`` (the 1000-way
    classifier, which a new task replaces). Any other missing, unexpected or mis-shaped key raises
    ``ReslearnError``: a silently partial load would train from a half-random network."""
    sd = read_state_dict(weights) if isinstance(weights, (str, Path)) else dict(weights)
    sd = {k: v for k, v in sd.items() if not k.startswith(skip)}
    own = model.state_dict()
    bad = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ReslearnError(
            f"{len(bad)} weights do not fit the model (first: {bad[0]} {tuple(sd[bad[0]].shape)} vs "
            f"{tuple(own[bad[0]].shape)}); is it the same depth and width?"
        )
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(skip)]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ReslearnError(
            f"weights do not match the model: {len(missing)} missing, {len(unexpected)} unexpected ({what})"
        )
