"""Batch augmentation, normalisation, ImageNet transforms and test-time averaging."""

import io

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors

from reslearn.data.augment import IMAGENET_EIGVAL, IMAGENET_EIGVEC, Normalizer, PCALighting, random_crop_flip
from reslearn.data.source import InMemorySource, batch_generator
from reslearn.data.testtime import predict_multi_scale, predict_ten_crop
from reslearn.data.transforms import (
    imagenet_eval_transform,
    imagenet_train_transform,
    multi_scale_inputs,
    ten_crop_transform,
)


def _images(n=64, c=3, h=32, w=32, seed=0):
    # values 1..255 so that only padding can produce a 0
    return torch.randint(1, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _reference(x, dy, dx, flip, p):
    """The paper's recipe spelled out: pad, crop at (dy, dx), maybe mirror."""
    h, w = x.shape[-2:]
    crop = F.pad(x, (p, p, p, p))[..., dy : dy + h, dx : dx + w]
    return crop.flip(-1) if flip else crop


def _find_params(x, y, p):
    return [(dy, dx, f) for dy in range(2 * p + 1) for dx in range(2 * p + 1) for f in (False, True)
            if torch.equal(_reference(x, dy, dx, f, p), y)]


# ---------------------------------------------------------------- random_crop_flip

def test_crop_flip_is_a_translated_maybe_flipped_copy():
    x = _images(64)
    y = random_crop_flip(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == torch.uint8
    found = [_find_params(x[i], y[i], 4) for i in range(len(x))]
    assert all(len(f) == 1 for f in found)  # exactly one (offset, flip) explains each output
    dys = {f[0][0] for f in found}
    dxs = {f[0][1] for f in found}
    assert dys == dxs == set(range(9))  # 64 draws cover all 9 offsets (P(miss) < 1e-2 each; seed fixed)
    shifted = [f[0] for f in found if f[0][:2] != (4, 4)]
    assert shifted and all((y[i] == 0).any() for i, f in enumerate(found) if f[0][:2] != (4, 4))


def test_crop_flip_deterministic_and_seeded():
    x = _images(16)
    a = random_crop_flip(x, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(random_crop_flip(x, batch_generator(0, 3, 5)), random_crop_flip(x, batch_generator(0, 3, 5)))


def test_flip_probability_and_no_op_settings():
    x = _images(4000, c=1, h=2, w=3)  # random 2x3: mirror-symmetric with negligible probability
    y = random_crop_flip(x, torch.Generator().manual_seed(3), padding=0)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())
    assert abs(mirrored.float().mean().item() - 0.5) < 0.03  # 4000 draws: sd 0.008
    assert torch.equal(random_crop_flip(x, torch.Generator(), padding=0, flip=False), x)
    z = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2, flip=False)
    assert all(not _find_params(x[i], z[i], 2)[0][2] for i in range(20))


def test_crop_flip_rejects_bad_input():
    with pytest.raises(ValueError, match="B, C, H, W"):
        random_crop_flip(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.Generator())
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(_images(2), torch.Generator(), padding=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crop_flip_cuda_matches_properties():
    x = _images(32).cuda()
    y = random_crop_flip(x, torch.Generator(device="cuda").manual_seed(0))
    assert y.is_cuda and all(len(_find_params(x[i].cpu(), y[i].cpu(), 4)) == 1 for i in range(32))
    with pytest.raises(ValueError, match="generator"):
        random_crop_flip(x, torch.Generator())


def test_in_memory_source_replays_augmentation():
    x, labels = _images(40), torch.arange(40) % 10
    norm = Normalizer.fit(x, mode="per_pixel")
    src = InMemorySource(x, labels, batch_size=16, augment=random_crop_flip, normalize=norm, shuffle=True, seed=3)
    first = list(src.iter_epoch(2))
    resumed = list(src.iter_epoch(2, start=1))
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(first[1:], resumed))
    assert first[0][0].dtype == torch.float32


# ---------------------------------------------------------------- Normalizer

def test_normalizer_per_pixel_is_mean_image_subtraction():
    x = _images(50, h=8, w=8)
    n = Normalizer.fit(x, mode="per_pixel", chunk=7)  # chunking does not change the sums
    assert n.mode == "per_pixel" and n.mean.shape == (3, 8, 8)
    assert torch.allclose(n.mean, x.double().mean(0).float() / 255, atol=1e-6)
    y = n(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y, x.float() / 255 - n.mean, atol=1e-6)  # no division
    assert y.mean(0).abs().max() < 1e-5
    raw = Normalizer.fit(x, mode="per_pixel", scale=1.0)  # Caffe's 0..255 units
    assert torch.allclose(raw(x), y * 255, atol=1e-3)


def test_normalizer_per_channel_and_state_roundtrip():
    x = _images(30, h=5, w=7)
    n = Normalizer.fit(x, mode="per_channel")
    assert n.mode == "per_channel" and n.mean.shape == (3, 1, 1)
    xf = x.double() / 255
    assert torch.allclose(n.std.flatten().double(), xf.std((0, 2, 3), unbiased=False), atol=1e-6)
    y = n(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    assert n(x[0]).shape == (3, 5, 7)  # a single image too

    buf = io.BytesIO()
    torch.save(n.state_dict(), buf)  # checkpoints load with weights_only=True: plain tensors only
    buf.seek(0)
    m = Normalizer.from_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(m(x), y) and m.mode == "per_channel"
    assert torch.equal(n.to("cpu")(x), y)
    with pytest.raises(ValueError, match="lacks"):
        Normalizer.from_state_dict({"mean": n.mean})


def test_normalizer_errors():
    x = _images(4, h=8, w=8)
    with pytest.raises(ValueError, match="mode"):
        Normalizer.fit(x, mode="per_image")
    with pytest.raises(ValueError, match="do not match"):
        Normalizer.fit(x, mode="per_pixel")(_images(2, h=4, w=4))
    with pytest.raises(ValueError, match="do not match"):
        Normalizer.fit(x, mode="per_channel")(_images(2, c=1))
    with pytest.raises(ValueError, match="positive"):
        Normalizer(mean=torch.zeros(3, 1, 1), std=torch.zeros(3, 1, 1))


# ---------------------------------------------------------------- PCA lighting

def test_pca_lighting_adds_the_documented_offset():
    img = torch.rand(3, 6, 5)
    t = PCALighting(0.1)
    torch.manual_seed(11)
    out = t(img)
    torch.manual_seed(11)
    alpha = torch.randn(3) * 0.1
    expect = torch.tensor(IMAGENET_EIGVEC) @ (alpha * torch.tensor(IMAGENET_EIGVAL))
    assert torch.allclose(out - img, expect.view(3, 1, 1).expand(3, 6, 5), atol=1e-6)
    assert torch.equal(PCALighting(0.0)(img), img)
    wrapped = t(tv_tensors.Image(img))
    assert isinstance(wrapped, tv_tensors.Image)
    with pytest.raises(ValueError, match="float RGB"):
        t(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_pca_lighting_covariance():
    # Offsets are eigvec @ (alpha * eigval): covariance eigvec diag((0.1 eigval)^2) eigvec^T.
    t = PCALighting(0.1)
    img = torch.zeros(3, 1, 1)
    torch.manual_seed(0)
    d = torch.stack([t(img).flatten() for _ in range(4000)]).double()
    v, lam = torch.tensor(IMAGENET_EIGVEC, dtype=torch.float64), torch.tensor(IMAGENET_EIGVAL, dtype=torch.float64)
    along = d @ v  # coordinates along the eigenvectors: independent, sd 0.1 * eigval
    assert torch.allclose(along.std(0), 0.1 * lam, rtol=0.06)
    assert abs(torch.corrcoef(along.T)[0, 1]) < 0.06


# ---------------------------------------------------------------- ImageNet transforms

@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8))


def test_train_transform_shapes_and_scale_range(photo):
    t = imagenet_train_transform()
    y = t(photo)
    assert y.shape == (3, 224, 224) and y.dtype == torch.float32 and type(y) is torch.Tensor
    resize = t.transforms[1]
    shorter = [min(resize(tv_tensors.Image(torch.zeros(3, 300, 420, dtype=torch.uint8))).shape[-2:]) for _ in range(60)]
    assert 256 <= min(shorter) < 300 and 430 < max(shorter) <= 480
    # without lighting and with a zero mean, the output is an exact crop of the resized image in [0, 1]
    plain = imagenet_train_transform(pca_lighting=0, mean=(0, 0, 0))(photo)
    assert 0 <= plain.min() and plain.max() <= 1
    with pytest.raises(ValueError, match="crop"):
        imagenet_train_transform(crop=300)


def test_eval_and_ten_crop(photo):
    ev = imagenet_eval_transform()(photo)
    tc = ten_crop_transform()(photo)
    assert ev.shape == (3, 224, 224) and tc.shape == (10, 3, 224, 224) and type(tc) is torch.Tensor
    assert torch.allclose(tc[4], ev, atol=1e-6)  # the centre crop
    # crops 5..9 are the corners and centre of the mirrored image: mirrors of tr, tl, br, bl, centre
    for flipped, orig in zip(range(5, 10), (1, 0, 3, 2, 4)):
        assert torch.allclose(tc[flipped], tc[orig].flip(-1), atol=1e-6)
    assert not torch.allclose(tc[0], tc[1])
    # per-pixel mean image (the paper's) instead of per-channel numbers
    mean_img = torch.full((3, 224, 224), 0.5)
    assert torch.allclose(imagenet_eval_transform(mean=mean_img, std=None)(photo),
                          imagenet_eval_transform(mean=(0.5, 0.5, 0.5))(photo), atol=1e-6)


def test_multi_scale_inputs():
    img = torch.rand(3, 300, 420)
    views = multi_scale_inputs(img, scales=(224, 256, 480))
    assert [min(v.shape[-2:]) for v in views] == [224, 224, 256, 256, 480, 480]
    assert views[2].shape == (3, 256, 358)  # aspect ratio kept
    assert torch.equal(views[1], views[0].flip(-1))
    assert len(multi_scale_inputs(img, scales=(224,), flip=False)) == 1


# ---------------------------------------------------------------- test-time averaging

class _Net(nn.Module):
    """Fully convolutional with global average pooling and batch norm (train/eval differ)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1))

    def forward(self, x):
        return self.body(x).mean((2, 3))


def test_predict_ten_crop():
    net = _Net().train()
    crops = torch.randn(2, 10, 3, 16, 16)
    p = predict_ten_crop(net, crops, chunk=7)
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        expect = torch.stack([net(c).softmax(-1).mean(0) for c in crops])
    assert p.shape == (2, 5) and torch.allclose(p, expect, atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(2), atol=1e-6)
    with pytest.raises(ValueError, match="n_crops"):
        predict_ten_crop(net, crops[0])


def test_predict_multi_scale():
    net = _Net().eval()
    imgs = [torch.randn(3, 20, 30), torch.randn(3, 24, 24)]
    scales = (16, 32)
    p = predict_multi_scale(net, imgs, scales)
    with torch.no_grad():
        expect = torch.stack([torch.stack([net(v[None]).softmax(-1)[0] for v in multi_scale_inputs(i, scales=scales)]).mean(0)
                              for i in imgs])
    assert p.shape == (2, 5) and torch.allclose(p, expect, atol=1e-6)
    batch = torch.stack([imgs[1], imgs[1].flip(-2)])  # equal sizes: one batch per scale
    pb = predict_multi_scale(net, batch, scales)
    assert torch.allclose(pb[0], p[1], atol=1e-6)
    assert not torch.allclose(predict_multi_scale(net, imgs, scales, flip=False), p)
