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

__all__ = ["read_torch_file", "read_state_dict", "load_backbone_weights"]


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ReslearnError(f"weights file {path} does not exist (no weights can be downloaded here)")
    return path


def _unpickler_reason(e: Exception) -> str:
    """One line for why ``torch.load`` failed: for its weights-only unpickler, the reason it
    states after "WeightsUnpickler error:" (on that line or the next), else the first line."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    after = next((i for i, ln in enumerate(lines) if "WeightsUnpickler error:" in ln), None)
    if after is not None:
        rest = [lines[after].split("error:", 1)[1].strip(), *lines[after + 1 :]]
        return next((ln for ln in rest if ln), "refused by the weights-only unpickler").split(". ")[0]
    return f"{type(e).__name__}: {lines[0]}" if lines and lines[0] else f"{type(e).__name__}: empty or truncated"


def read_torch_file(path: str | Path) -> object:
    """What ``torch.load(path, weights_only=True)`` returns, on the CPU; a missing file, a file
    that is not torch's, and a pickle of other objects (which ``weights_only`` refuses, as it may
    run code) each raise one ``ReslearnError`` naming the problem."""
    path = _existing(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, not a torch file, pickled code refused by weights_only
        why = _unpickler_reason(e)
        if "Unsupported global" in why:  # a class or function pickled by reference: could run code
            raise ReslearnError(f"cannot read weights {path}: it pickles more than tensors ({why}), which "
                                f"torch.load(weights_only=True) refuses; save its state_dict alone") from None
        raise ReslearnError(f"cannot read weights {path}: not a readable PyTorch file ({why})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file, on the CPU; a ``{"state_dict": ...}``
    or ``{"model": ...}`` wrapper and DataParallel's ``module.`` prefix are removed."""
    path = _existing(path)
    if path.suffix != ".safetensors":
        sd = read_torch_file(path)
    else:
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # truncated or corrupt
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
