"""ImageNet-style per-sample transforms (He et al. 2016 Sec. 3.4), with torchvision.transforms.v2.

Train: "The image is resized with its shorter side randomly sampled in [256, 480] for scale
augmentation. A 224x224 crop is randomly sampled from an image or its horizontal flip, with the
per-pixel mean subtracted. The standard color augmentation in [21] is used." Test: "the standard
10-crop testing" or, for the best results, "the fully-convolutional form ... average the scores at
multiple scales (images are resized such that the shorter side is in {224, 256, 384, 480, 640})".
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .augment import IMAGENET_EIGVAL, IMAGENET_EIGVEC, Normalizer

__all__ = [
    "PCALighting",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_normalizer",
    "imagenet_train_transform",
    "imagenet_eval_transform",
    "ten_crop_transform",
    "multi_scale_inputs",
    "PAPER_CROP",
    "PAPER_TEST_SCALES",
    "multi_scale_sizes",
    "eval_resize",
]

# The paper's training crop and its multi-scale test sizes (shorter sides, Sec. 3.4). A model
# trained on other crops is tested at the same ratios to its own crop (multi_scale_sizes).
PAPER_CROP = 224
PAPER_TEST_SCALES = (224, 256, 384, 480, 640)

# Per-channel mean and std of ImageNet training pixels in [0, 1] (torchvision's models use them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Mean = Sequence[float] | torch.Tensor


class PCALighting(v2.Transform):
    """Krizhevsky et al. 2012 Sec. 4.1 "altering the intensities of the RGB channels": add
    ``[p1, p2, p3] @ [a1 * l1, a2 * l2, a3 * l3]`` to every pixel, ``a_i ~ N(0, alphastd)`` drawn
    once per call (so once per image in a per-sample pipeline, once per batch for a batch),
    ``p_i`` / ``l_i`` the eigenvectors / eigenvalues of the RGB pixel covariance.

    A ``torchvision.transforms.v2`` transform for float RGB images (..., 3, H, W) in [0, 1];
    place it after ``v2.ToDtype(torch.float32, scale=True)`` and before normalisation, as
    fb.resnet.torch does. Draws use torch's global RNG, like every v2 transform.
    """

    def __init__(
        self,
        alphastd: float = 0.1,
        *,
        eigval: Sequence[float] = IMAGENET_EIGVAL,
        eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC,
    ) -> None:
        super().__init__()
        if alphastd < 0:
            raise ValueError(f"alphastd must be >= 0; got {alphastd}")
        self.alphastd = float(alphastd)
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = torch.randn(3) * self.alphastd
        return {"rgb": self.eigvec @ (alpha * self.eigval)}  # (3,), one offset per channel

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask)) or not isinstance(inpt, torch.Tensor):
            return inpt
        if not inpt.is_floating_point() or inpt.shape[-3:-2] != (3,):
            raise ValueError(f"PCALighting needs float RGB images (..., 3, H, W); got {inpt.dtype} {tuple(inpt.shape)}")
        out = inpt + params["rgb"].to(inpt.device, inpt.dtype).view(3, 1, 1)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    # torchvision < 0.21 named the two hooks privately.
    _get_params = make_params
    _transform = transform

    def extra_repr(self) -> str:
        return f"alphastd={self.alphastd}"


def imagenet_normalizer() -> Normalizer:
    """The normalisation of :func:`imagenet_eval_transform` (its defaults) as a ``Normalizer`` of
    uint8 images: x/255 minus the per-channel ImageNet mean, no division. Checkpoints of the
    ImageFolder path record it, so ``predict`` preprocesses as ``eval`` does."""
    return Normalizer(mean=torch.tensor(IMAGENET_MEAN).view(3, 1, 1), std=torch.ones(3, 1, 1))


def _subtract(x: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.to(x.device)) / std.to(x.device)


def _normalize(mean: Mean, std: Sequence[float] | None) -> v2.Transform:
    """Subtract ``mean`` (per channel: 3 numbers; per pixel: a (3, H, W) mean image in [0, 1]
    units, the paper's choice) and divide by ``std`` per channel (None: no division, the paper)."""
    if isinstance(mean, torch.Tensor) and mean.dim() == 3:
        s = torch.ones(3, 1, 1) if std is None else torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        # a partial of a module function pickles (DataLoader workers); images only, not labels
        return v2.Lambda(partial(_subtract, mean=mean.float(), std=s), torch.Tensor)
    return v2.Normalize(mean=[float(m) for m in mean], std=[1.0, 1.0, 1.0] if std is None else list(std))


def imagenet_train_transform(
    *,
    crop: int = 224,
    scale: tuple[int, int] = (256, 480),
    mean: Mean = IMAGENET_MEAN,
    std: Sequence[float] | None = None,
    pca_lighting: float = 0.1,
) -> v2.Compose:
    """PIL image or uint8 (3, H, W) -> float32 (3, crop, crop): shorter side resized to an integer
    uniform in ``[scale[0], scale[1]]``, a random ``crop`` square, a horizontal flip with
    probability 1/2, PCA colour noise (``pca_lighting`` = alphastd; 0 disables), mean subtraction.
    """
    if not 0 < crop <= scale[0] <= scale[1]:
        raise ValueError(f"need 0 < crop <= scale[0] <= scale[1]; got crop={crop}, scale={scale}")
    steps: list[v2.Transform] = [
        v2.ToImage(),
        v2.RandomResize(scale[0], scale[1] + 1, antialias=True),  # upper bound exclusive; int size = shorter side
        v2.RandomCrop(crop),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if pca_lighting > 0:
        steps.append(PCALighting(pca_lighting))
    steps += [_normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose(steps)


def imagenet_eval_transform(
    *, resize: int = 256, crop: int = 224, mean: Mean = IMAGENET_MEAN, std: Sequence[float] | None = None
) -> v2.Compose:
    """Single-crop evaluation: shorter side to ``resize``, centre ``crop`` square, mean subtraction."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(crop),
        v2.ToDtype(torch.float32, scale=True),
        _normalize(mean, std),
        v2.ToPureTensor(),
    ])


def _stack(crops: Sequence[torch.Tensor]) -> tv_tensors.Image:
    """TenCrop's tuple of crops as one (10, C, H, W) image tensor."""
    return tv_tensors.Image(torch.stack(list(crops)))


def ten_crop_transform(
    *, resize: int = 256, crop: int = 224, mean: Mean = IMAGENET_MEAN, std: Sequence[float] | None = None
) -> v2.Compose:
    """Krizhevsky et al. 2012's 10-crop test: shorter side to ``resize``, the four corner and the
    centre ``crop`` squares and their horizontal flips -> float32 (10, 3, crop, crop), in
    torchvision's ``TenCrop`` order (corners tl, tr, bl, br, centre; then the same flipped). Batch
    with a DataLoader to (B, 10, 3, crop, crop) for :func:`reslearn.data.testtime.predict_ten_crop`.
    """
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, antialias=True),
        v2.TenCrop(crop),
        _stack,  # a plain step (v2.Lambda would be applied to each crop of the tuple separately)
        v2.ToDtype(torch.float32, scale=True),
        _normalize(mean, std),
        v2.ToPureTensor(),
    ])


def eval_resize(crop: int) -> int:
    """The single- and 10-crop test's shorter side for ``crop``: the paper's 256 for 224, the
    same ratio (8/7) for other crops (64 for 56)."""
    return round(crop * 256 / PAPER_CROP)


def multi_scale_sizes(crop: int) -> tuple[int, ...]:
    """Multi-scale test sizes for a model trained on ``crop`` squares: the paper's
    {224, 256, 384, 480, 640} at the same ratios to ``crop`` ({56, 64, 96, 120, 160} for 56)."""
    if crop < 1:
        raise ValueError(f"crop must be >= 1; got {crop}")
    return tuple(round(s * crop / PAPER_CROP) for s in PAPER_TEST_SCALES)


def multi_scale_inputs(
    img: torch.Tensor, *, scales: Sequence[int] = PAPER_TEST_SCALES, flip: bool = True
) -> list[torch.Tensor]:
    """The full image resized so its shorter side is each of ``scales`` (antialiased), each
    followed by its horizontal flip when ``flip``: ``[s0, s0 flipped, s1, s1 flipped, ...]``.

    ``img`` is (..., C, H, W), uint8 or float (normalise before or after: per-channel
    normalisation commutes with resizing). A fully convolutional net with global average pooling
    scores any size.
    """
    if img.dim() < 3:
        raise ValueError(f"img must be (..., C, H, W); got shape {tuple(img.shape)}")
    out = []
    for s in scales:
        r = TF.resize(img, [int(s)], antialias=True)
        out += [r, r.flip(-1)] if flip else [r]
    return out
