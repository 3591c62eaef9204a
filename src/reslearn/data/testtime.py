"""Test-time averaging of softmax scores over crops and scales (He et al. 2016 Sec. 3.4)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from .transforms import PAPER_TEST_SCALES, multi_scale_inputs

__all__ = ["predict_ten_crop", "predict_multi_scale"]


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (batch-norm running statistics) and no autograd, restoring the caller's mode:
    the 10 crops of one image are not a sample of the data set."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def predict_ten_crop(model: nn.Module, crops: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """Average softmax over the crops of each image.

    Args:
        crops: (B, n_crops, C, H, W), e.g. from :func:`reslearn.data.transforms.ten_crop_transform`,
            on the model's device.
        chunk: at most this many crops per forward pass (None: all B * n_crops at once).

    Returns:
        float32 (B, K) class probabilities.
    """
    if crops.dim() != 5:
        raise ValueError(f"crops must be (B, n_crops, C, H, W); got shape {tuple(crops.shape)}")
    b, n = crops.shape[:2]
    flat = crops.flatten(0, 1)
    step = chunk or len(flat)
    with _evaluating(model):
        probs = torch.cat([model(flat[i : i + step]).float().softmax(-1) for i in range(0, len(flat), step)])
    return probs.view(b, n, -1).mean(1)


def predict_multi_scale(
    model: nn.Module,
    images: Sequence[torch.Tensor] | torch.Tensor,
    scales: Sequence[int] = PAPER_TEST_SCALES,
    *,
    flip: bool = True,
) -> torch.Tensor:
    """Average softmax over ``scales`` (shorter side) and, with ``flip``, horizontal flips of each
    full image, the paper's fully-convolutional multi-scale test. The default scales are the
    paper's for its 224 crops; for a model trained on other crops pass
    :func:`reslearn.data.transforms.multi_scale_sizes` of its crop.

    Args:
        images: normalised float (C, H, W) images, any sizes, on the model's device; or a
            (B, C, H, W) tensor of equal-sized ones (each scale then runs as one batch).

    Returns:
        float32 (B, K) class probabilities.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        groups = [images]  # one batch per scale (and flip)
    else:
        groups = [img.unsqueeze(0) for img in images]
    if not groups:
        raise ValueError("no images")
    out = []
    with _evaluating(model):
        for batch in groups:
            views = multi_scale_inputs(batch, scales=scales, flip=flip)
            out.append(torch.stack([model(v).float().softmax(-1) for v in views]).mean(0))
    return torch.cat(out)
