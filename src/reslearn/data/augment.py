"""Batch augmentation and normalisation on the training device: whole-batch tensor ops, no
per-sample Python, every random draw from the batch's own generator (so a resumed run replays it;
see :func:`reslearn.data.source.batch_generator`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["random_crop_flip", "Normalizer", "PCALighting", "IMAGENET_EIGVAL", "IMAGENET_EIGVEC"]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, *, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """He et al. 2016 Sec. 4.2's CIFAR augmentation: "4 pixels are padded on each side, and a
    32x32 crop is randomly sampled from the padded image or its horizontal flip".

    Each image is zero-padded by ``padding``, cropped back to (H, W) at an offset uniform in
    ``[0, 2 * padding]`` per axis and, with ``flip``, mirrored with probability 1/2 (cropping the
    flipped padded image is the same as flipping a crop). Padding is with 0 in uint8, i.e. black,
    before normalisation (fb.resnet.torch pads after it, i.e. with the mean colour; the paper does
    not say).

    Args:
        x: uint8 (B, C, H, W) on any device.
        generator: on ``x``'s device; draws, in order, the B row offsets, the B column offsets and
            (with ``flip``) B uniforms for the flips.

    Returns:
        uint8 (B, C, H, W), a new tensor.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W); got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0; got {padding}")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but x is on {x.device}")
    b, c, h, w = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    rows = oy[:, None] + torch.arange(h, device=dev)  # (B, H) rows of the padded image
    cols = ox[:, None] + torch.arange(w, device=dev)  # (B, W)
    if flip:
        mirrored = torch.rand(b, generator=generator, device=dev) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    xp = F.pad(x, (padding, padding, padding, padding))  # zeros
    # Two gathers with per-sample index vectors broadcast (stride 0) over channels: rows, then columns.
    out = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class Normalizer:
    """``y = (x * scale - mean) / std`` for uint8 images, fitted on the training set.

    ``mode="per_pixel"``: He et al. 2016 Sec. 4.2 (after Krizhevsky et al. 2012), "the per-pixel
    mean subtracted": a mean image (C, H, W), no division (``std`` is 1). ``mode="per_channel"``:
    a mean and a standard deviation per channel (C, 1, 1), the common PyTorch convention.

    ``scale`` (default 1/255) maps uint8 to [0, 1] first; ``scale=1`` subtracts in raw 0..255
    units as Caffe did. With batch normalisation after the first convolution the network's
    function does not depend on it.

    Attributes:
        mean, std: float32, broadcastable to (C, H, W), in units of ``x * scale``.
    """

    def __init__(self, *, mean: torch.Tensor, std: torch.Tensor, scale: float = 1 / 255) -> None:
        if mean.dim() != 3 or std.dim() != 3:
            raise ValueError(f"mean and std must be (C, H, W) or (C, 1, 1); got {tuple(mean.shape)}, {tuple(std.shape)}")
        if bool((std <= 0).any()):
            raise ValueError("std must be positive")
        self.mean, self.std, self.scale = mean.float(), std.float(), float(scale)
        # One fused multiply-add per element: y = x * (scale / std) + (-mean / std).
        self._mul = (self.scale / self.std.double()).float()
        self._add = (-self.mean.double() / self.std.double()).float()

    @property
    def mode(self) -> str:
        return "per_channel" if self.mean.shape[1:] == (1, 1) else "per_pixel"

    @classmethod
    def fit(cls, images_uint8: torch.Tensor, *, mode: str, scale: float = 1 / 255, chunk: int = 4096) -> Normalizer:
        """Fit on uint8 (N, C, H, W) training images (float64 sums, ``chunk`` images at a time, on
        the CPU so the result does not depend on the device). Per-channel std is the population
        standard deviation over all N*H*W pixels."""
        if mode not in ("per_pixel", "per_channel"):
            raise ValueError(f"mode must be 'per_pixel' or 'per_channel'; got {mode!r}")
        if images_uint8.dim() != 4 or len(images_uint8) == 0:
            raise ValueError(f"images must be non-empty (N, C, H, W); got shape {tuple(images_uint8.shape)}")
        n, c, h, w = images_uint8.shape
        s1 = torch.zeros(c, h, w, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        for i in range(0, n, chunk):
            xb = images_uint8[i : i + chunk].cpu().double()
            s1 += xb.sum(0)
            if mode == "per_channel":
                s2 += xb.square().sum((0, 2, 3))
        if mode == "per_pixel":
            mean = s1 / n * scale
            std = torch.ones(c, 1, 1, dtype=torch.float64)
        else:
            m = s1.sum((1, 2)) / (n * h * w)
            var = (s2 / (n * h * w) - m.square()).clamp_min(0)
            mean, std = (m * scale).view(c, 1, 1), (var.sqrt() * scale).view(c, 1, 1)
        return cls(mean=mean.float(), std=std.float(), scale=scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (..., C, H, W) -> float32 normalised, on ``x``'s device (after :meth:`to`)."""
        c, h, w = self.mean.shape
        if x.dim() < 3 or x.shape[-3] != c or (self.mode == "per_pixel" and x.shape[-2:] != (h, w)):
            raise ValueError(f"images of shape {tuple(x.shape[-3:])} do not match the normaliser's {tuple(self.mean.shape)}")
        return torch.addcmul(self._add, x.to(torch.float32), self._mul)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: ``mean``, ``std`` (float32) and ``scale`` (0-dim float64)."""
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "scale": torch.tensor(self.scale, dtype=torch.float64)}

    @classmethod
    def from_state_dict(cls, d: dict[str, torch.Tensor]) -> Normalizer:
        """Rebuild from :meth:`state_dict`."""
        missing = {"mean", "std", "scale"} - set(d)
        if missing:
            raise ValueError(f"normaliser state lacks {sorted(missing)}")
        return cls(mean=d["mean"], std=d["std"], scale=float(d["scale"]))

    def to(self, device: torch.device | str) -> Normalizer:
        """A copy whose tensors live on ``device``."""
        out = Normalizer(mean=self.mean, std=self.std, scale=self.scale)
        out.mean, out.std = self.mean.to(device), self.std.to(device)
        out._mul, out._add = self._mul.to(device), self._add.to(device)
        return out

    def __repr__(self) -> str:
        return f"Normalizer(mode={self.mode}, shape={tuple(self.mean.shape)}, scale={self.scale:g})"


# Eigen-decomposition of the RGB covariance of ImageNet training pixels in [0, 1], as used by
# fb.resnet.torch (datasets/imagenet.lua, `pca`) for Krizhevsky et al. 2012's colour
# augmentation; columns of IMAGENET_EIGVEC are the eigenvectors.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def __getattr__(name: str) -> Any:
    # PCALighting is a torchvision.transforms.v2 transform and lives in .transforms: importing
    # torchvision costs seconds, which CIFAR training (this module's main user) does not need.
    if name == "PCALighting":
        from .transforms import PCALighting

        return PCALighting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
