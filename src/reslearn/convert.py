"""Published CIFAR ResNet checkpoints into reslearn weights files, computing the same function.

The layout read here is that of the widely used option-A CIFAR ResNets of Y. Idelbayev, "Proper
ResNet Implementation for CIFAR10/CIFAR100 in PyTorch" (github.com/akamaster/pytorch_resnet_cifar10),
which publishes trained resnet20/32/44/56/110/1202 ``.th`` files. Such a file is a dict
``{"state_dict": ..., "best_prec1": ...}`` (intermediate checkpoints add ``"epoch"``) whose keys
carry DataParallel's ``module.`` prefix; its modules are ``conv1, bn1, layer{1,2,3}.{b}.{conv1,
bn1,conv2,bn2}, linear``, i.e. ours but for ``linear`` (our ``fc``, torchvision's name).

The one real difference is the option-A shortcut where a stage doubles the channels: theirs
pads ``planes // 4`` zero channels *before and after* the subsampled input, ours
(:class:`reslearn.layers.ZeroPadShortcut`, after the paper's Sec. 3.3) pads them all *after*.
So the identity channels of stages 2 and 3 sit in the middle of their residual stream and at the
start of ours. A permutation of each stage's channels (:func:`stream_permutations`), applied to
every tensor that writes or reads the stream, maps one network onto the other exactly.

Their trainer feeds ``ToTensor()`` images (x / 255) normalised per channel with the ImageNet
statistics below; the weights file records that normaliser, so ``reslearn eval`` and ``reslearn
predict`` preprocess as the checkpoint expects.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch

from . import __version__
from .errors import ReslearnError

__all__ = ["LAYOUT", "PEER_MEAN", "PEER_STD", "stream_permutations", "peer_to_reslearn", "read_peer_checkpoint",
           "convert_checkpoint"]

LAYOUT = "pytorch_resnet_cifar10"
# Their trainer.py: transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).
PEER_MEAN = (0.485, 0.456, 0.406)
PEER_STD = (0.229, 0.224, 0.225)
# batches.meta of the CIFAR-10 release, in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
WIDTHS = (16, 32, 64)  # filters per stage (He et al. 2016 Sec. 4.2), fixed in their code
_BN = ("weight", "bias", "running_mean", "running_var")
_REQUIRED = ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer3.0.bn2.weight", "linear.weight")


def stream_permutations(widths: Sequence[int] = WIDTHS) -> list[torch.Tensor]:
    """Per stage, the peer's channel that holds each of our residual-stream channels.

    ``perms[s][i] = j`` means our channel ``i`` in stage ``s`` carries what their channel ``j``
    does. Stage 1 is the identity. Where a stage goes from ``c`` to ``2c`` channels, their
    shortcut writes its input channel ``k`` to ``c/2 + k`` (``planes // 4 = c/2`` zeros first),
    ours to ``k``; so our first ``c`` channels follow the previous stage's map shifted by ``c/2``,
    and our ``c`` zero channels take their zero channels (``[0, c/2)`` and ``[3c/2, 2c)``, in
    order; any order of those would do, as the shortcut adds nothing there).
    """
    perms = [torch.arange(widths[0])]
    for c_in, c_out in zip(widths, widths[1:]):
        pad = c_out // 4
        if c_in + 2 * pad != c_out:
            raise ValueError(f"option A pads {pad} channels on each side: {c_in} -> {c_out} is not a doubling")
        perms.append(torch.cat([pad + perms[-1], torch.arange(pad), torch.arange(pad + c_in, c_out)]))
    return perms


def _stream_axes(n: int, perms: Sequence[torch.Tensor]) -> dict[str, tuple[int, torch.Tensor]]:
    """Our keys with an axis on the residual stream: ``key -> (axis, permutation)``. The stem and
    each block's ``conv2``/``bn2`` write the stream (output axis 0); each block's ``conv1`` and the
    fc read it (input axis 1). ``bn1`` and ``conv2``'s input are inside a block: unchanged."""
    axes = {"conv1.weight": (0, perms[0]), **{f"bn1.{f}": (0, perms[0]) for f in _BN}}
    for s, p in enumerate(perms):
        for b in range(n):
            block = f"layer{s + 1}.{b}"
            axes[f"{block}.conv1.weight"] = (1, perms[s - 1] if b == 0 and s > 0 else p)
            axes[f"{block}.conv2.weight"] = (0, p)
            axes.update({f"{block}.bn2.{f}": (0, p) for f in _BN})
    axes["fc.weight"] = (1, perms[-1])
    return axes


def _our_key(key: str) -> str:
    return "fc." + key[len("linear."):] if key.startswith("linear.") else key


def _permute(state: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    axes = _stream_axes(n, stream_permutations())
    return {k: t.index_select(axes[k][0], axes[k][1]) if k in axes else t for k, t in state.items()}


def peer_to_reslearn(state: dict[str, torch.Tensor], *, n: int) -> dict[str, torch.Tensor]:
    """Their state_dict (``module.`` removed) of a ResNet-(6n+2) under our keys and channel order."""
    return _permute({_our_key(k): v for k, v in state.items()}, n)


def read_peer_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state_dict of a checkpoint in their layout, ``module.`` removed, and what the file says
    of its training (``best_prec1``: their best test accuracy in %, ``epoch``), read with
    ``torch.load(weights_only=True)``."""
    from .models.pretrained import read_torch_file

    obj = read_torch_file(path)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ReslearnError(f"unknown checkpoint layout in {path}: no state_dict of tensors")
    sd = {str(k).removeprefix("module."): v for k, v in sd.items()}
    missing = [k for k in _REQUIRED if k not in sd]
    shortcut = [k for k in sd if ".shortcut." in k]
    if missing or shortcut:
        why = f"no {missing[0]}" if missing else f"projection shortcut weights ({shortcut[0]}), not option A"
        raise ReslearnError(f"unknown checkpoint layout in {path}: {why}; expected {LAYOUT}'s option-A "
                            f"ResNet (conv1, bn1, layer1.0.conv1, ..., linear)")
    info = {k: obj[k].item() if isinstance(obj[k], torch.Tensor) else obj[k]
            for k in ("best_prec1", "epoch") if isinstance(obj, dict) and k in obj}
    return sd, info


def _blocks_per_stage(sd: dict[str, torch.Tensor], path: str | Path) -> int:
    counts = [len({k.split(".")[1] for k in sd if k.startswith(f"layer{s}.") and k.endswith(".conv1.weight")})
              for s in (1, 2, 3)]
    if len(set(counts)) != 1:
        raise ReslearnError(f"unknown checkpoint layout in {path}: {counts} blocks in its three stages (6n+2 "
                            f"layers have n in each)")
    return counts[0]


def _model_name(depth: int, model: str | None, path: str | Path) -> str:
    from .models.cifar_resnet import cifar_resnet
    from .registry import list_models, model_info

    known = [m for m in list_models(family="cifar_resnet") if model_info(m).builder is cifar_resnet]
    name = model or f"resnet{depth}"
    if name not in known:
        what = f"{name} is not a CIFAR ResNet" if model else f"no reslearn model is a ResNet-{depth}"
        raise ReslearnError(f"{path} holds a ResNet-{depth}, but {what} (CIFAR ResNets: {', '.join(known)})")
    if model_info(name).defaults["depth"] != depth:
        raise ReslearnError(f"{path} holds a ResNet-{depth} ({(depth - 2) // 6} blocks per stage), not {name}")
    return name


def _check_fit(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], name: str, path) -> None:
    """Every key of the model present with its shape, in the model's order; the BN batch counter
    (absent from checkpoints saved before PyTorch 0.4.1) is filled with the model's zero."""
    extra = [k for k in theirs if k not in ours]
    if extra:
        raise ReslearnError(f"{path} does not fit {name}: unexpected key {extra[0]}")
    for key, want in ours.items():
        if key not in theirs and key.endswith("num_batches_tracked"):
            theirs[key] = want
        elif key not in theirs:
            raise ReslearnError(f"{path} does not fit {name}: no {key}")
        elif theirs[key].shape != want.shape:
            raise ReslearnError(f"{path} does not fit {name}: {key} is {tuple(theirs[key].shape)}, "
                                f"{name} needs {tuple(want.shape)}")


def _weights_doc(name: str, kwargs: dict[str, Any], src: Path, info: dict[str, Any]) -> dict[str, Any]:
    """What ``reslearn eval``/``predict`` read from a weights file, with the peer's normaliser."""
    from .checkpoint import tensors_to_json
    from .data.augment import Normalizer

    norm = Normalizer(mean=torch.tensor(PEER_MEAN).view(3, 1, 1), std=torch.tensor(PEER_STD).view(3, 1, 1))
    return {
        "kind": "weights",
        "model": name,
        "model_kwargs": kwargs,
        "classes": [] if kwargs else list(CIFAR10_CLASSES),  # CIFAR-100: class indices
        "image_size": [32, 32],
        "in_chans": 3,
        "data": "cifar100" if kwargs else "cifar10",
        "normalizer": tensors_to_json(norm.state_dict()),
        "reslearn_version": __version__,
        "source": {"layout": LAYOUT, "file": src.name, "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
                   **info},
    }


def convert_checkpoint(src: str | Path, out: str | Path, *, model: str | None = None) -> dict[str, Any]:
    """Convert a ``pytorch_resnet_cifar10`` checkpoint ``src`` into the reslearn weights file
    ``out`` (safetensors) for ``model`` (default: ``resnet{depth}`` from the file's blocks).

    Returns the model name, depth, classes count, the file's own ``best_prec1``/``epoch``, and the
    path written. Raises ``ReslearnError`` for a file that is missing, not torch's, refused by
    ``weights_only``, of another layout, of another depth than ``model``, or of wrong shapes."""
    from .checkpoint import save_tensors
    from .registry import create_model

    src = Path(src)
    theirs, info = read_peer_checkpoint(src)
    n = _blocks_per_stage(theirs, src)
    num_classes = int(theirs["linear.weight"].shape[0])
    if num_classes not in (10, 100):
        raise ReslearnError(f"{src} has {num_classes} outputs; CIFAR-10 (10) or CIFAR-100 (100) expected")
    name = _model_name(6 * n + 2, model, src)
    kwargs = {} if num_classes == 10 else {"num_classes": num_classes}
    net = create_model(name, **kwargs)
    state = {_our_key(k): v for k, v in theirs.items()}
    _check_fit(net.state_dict(), state, name, src)  # before permuting: a wrong shape is named, not an index error
    net.load_state_dict(_permute(state, n), strict=True)
    save_tensors(out, net.state_dict(), _weights_doc(name, kwargs, src, info))
    return {"out": str(out), "model": name, "depth": 6 * n + 2, "num_classes": num_classes, **info}
