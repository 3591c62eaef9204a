"""The inference fast path: exact batch-norm folding, channels_last weights, optional
``torch.compile``.

An inference-mode BN is an affine map per channel, ``y = (x - mu) / sqrt(var + eps) * gamma +
beta``; when its input is the output of a convolution and nothing else reads that output, the map
folds into the convolution's weights and bias (Ioffe & Szegedy 2015 Sec. 3.2 note that at
inference "the normalization is simply a linear transform"; ``torch.nn.utils.fusion`` does the
arithmetic). Which (conv, BN) pairs qualify is read from one traced forward pass, not from module
names: pre-activation units (BN -> ReLU -> conv, He et al. ECCV 2016) and the keyword-spotting
blocks (conv -> ReLU -> BN, Tang & Lin 2018) put a non-linearity between the two, and a BN *before*
a padded convolution cannot fold into it exactly (the zero padding sits after the BN), so those
BNs stay. Nothing here imports the engine.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["foldable_pairs", "fold_bn", "fast_model"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Reading these tells nothing about a tensor's values, so it does not count as a use of them.
_METADATA = frozenset({
    "dim", "size", "numel", "stride", "is_contiguous", "is_floating_point", "element_size",
    "get_device", "shape", "dtype", "device", "ndim", "layout", "requires_grad", "is_cuda",
    "is_quantized", "is_meta", "is_sparse", "is_nested", "grad_fn", "names",
})


def _func_name(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property such as Tensor.shape: name the property
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


class _CountUses(TorchFunctionMode):
    """Counts, for each watched tensor, the torch operations that read its values."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, torch.Tensor] = {}  # id -> tensor, kept alive so ids stay unique
        self.uses: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _func_name(func) not in _METADATA:
            for a in tree_flatten((args, kwargs))[0]:
                if isinstance(a, torch.Tensor) and id(a) in self.watched:
                    self.uses[id(a)] += 1
        return func(*args, **kwargs)


def _registry_input_size(model: nn.Module) -> tuple[int, ...]:
    from .registry import model_info

    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("input_size is needed for a model that is not from reslearn.create_model")
    info = model_info(name)
    return tuple(info.test_input_size or info.input_size)


@torch.no_grad()
def foldable_pairs(model: nn.Module, *, input_size: tuple[int, ...] | None = None) -> list[tuple[str, str]]:
    """``(conv name, BN name)`` pairs where the BN's input is the conv's output and nothing else
    reads that output, found by one forward pass of a ``(1, *input_size)`` input in eval mode.

    ``input_size`` is (C, H, W) (any size the model accepts); by default the registry's test size
    of ``model.model_name``. Modules called more than once (shared weights) are never paired.
    """
    size = tuple(input_size) if input_size else _registry_input_size(model)
    was_training = model.training
    model.eval()
    mode, calls = _CountUses(), {}
    produced: dict[int, str] = {}  # id of a conv output -> conv name
    bn_input: dict[str, int | None] = {}  # BN name -> id of its input if a conv produced it

    def after_conv(name):
        def hook(module, args, out):
            calls[name] = calls.get(name, 0) + 1
            mode.watched[id(out)], mode.uses[id(out)] = out, 0
            produced[id(out)] = name
        return hook

    def before_bn(name):
        def hook(module, args):
            calls[name] = calls.get(name, 0) + 1
            # Looked up now: a freed input's id can be reused by a later conv's output.
            bn_input[name] = id(args[0]) if id(args[0]) in produced else None
        return hook

    handles = []
    for name, m in model.named_modules():
        if type(m) in _CONVS:
            handles.append(m.register_forward_hook(after_conv(name)))
        elif type(m) in _BNS:
            handles.append(m.register_forward_pre_hook(before_bn(name)))
    p = next(iter(model.parameters()), None)
    x = torch.randn(1, *size, device=p.device if p is not None else None)
    try:
        with mode:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    modules = dict(model.named_modules())
    pairs = []
    for bn_name, tid in bn_input.items():
        if tid is None:
            continue
        conv_name = produced[tid]
        if calls[conv_name] != 1 or calls[bn_name] != 1 or mode.uses[tid] != 1:
            continue
        bn = modules[bn_name]
        if bn.running_mean is not None and bn.num_features == modules[conv_name].out_channels:
            pairs.append((conv_name, bn_name))
    return pairs


def _fuse_exact(conv: nn.Module, bn: nn.Module) -> nn.Module:
    # In float64, then rounded once to the weights' dtype: the folded weights are as close to
    # w * gamma / sqrt(var + eps) as that dtype allows.
    dtype = conv.weight.dtype
    fused = fuse_conv_bn_eval(copy.deepcopy(conv).double().eval(), copy.deepcopy(bn).double().eval())
    return fused.to(dtype)


def fold_bn(model: nn.Module, *, input_size: tuple[int, ...] | None = None, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` (``model`` itself with ``inplace``) in which every foldable
    conv -> BN pair (see :func:`foldable_pairs`) is one convolution with a bias and the BN is an
    ``nn.Identity``. Equal to the eval-mode model up to float rounding. ``folded_bn`` on the
    result counts the BNs folded."""
    pairs = foldable_pairs(model, input_size=input_size)
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    for conv_name, bn_name in pairs:
        out.set_submodule(conv_name, _fuse_exact(out.get_submodule(conv_name), out.get_submodule(bn_name)))
        out.set_submodule(bn_name, nn.Identity())
    out.folded_bn = len(pairs)  # type: ignore[assignment]
    return out


def fast_model(model: nn.Module, *, input_size: tuple[int, ...] | None = None, fold: bool = True,
               channels_last: bool = True, compile: bool = False) -> nn.Module:
    """``model`` made ready for fp32 inference: eval mode, BN folded (``fold``), 4-D weights in
    channels_last memory order (``channels_last``; oneDNN's convolutions prefer NHWC and follow the
    weights' layout), and optionally ``torch.compile`` with Inductor's freezing (constant-folds the
    weights into the graph; takes effect under ``torch.no_grad()``), one static graph per input
    shape. Compiling costs seconds to minutes per shape, so it pays for long runs only. With
    ``fold`` the result is a copy; without it ``model`` itself is put in eval mode and converted."""
    out = fold_bn(model, input_size=input_size) if fold else model.eval()
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    if compile:
        out = torch.compile(out, dynamic=False, options={"freezing": True})
    return out
