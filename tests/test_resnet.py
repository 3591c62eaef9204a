"""He et al. 2016: exact structure of the ImageNet (Table 1) and CIFAR (Sec. 4.2) families."""

import pytest
import torch
import torch.nn as nn
import torchvision

from reslearn import create_model, list_models
from reslearn.layers import ZeroPadShortcut
from reslearn.models import cifar_plain, cifar_resnet, imagenet_plain, imagenet_resnet
from reslearn.summary import count_params, summarize

IMAGENET = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth", list(IMAGENET))
@pytest.mark.parametrize("variant", ["paper", "v1.5"])
def test_imagenet_params_both_variants(depth, variant):
    with torch.device("meta"):
        m = create_model(f"resnet{depth}", variant=variant)
    assert count_params(m) == IMAGENET[depth]


@pytest.mark.parametrize("depth,ref", [(50, 4.09e9), (101, 7.80e9), (152, 11.51e9)])
def test_v15_multiply_adds(depth, ref):
    macs = summarize(f"resnet{depth}", variant="v1.5").macs
    assert abs(macs - ref) / ref < 0.02


@pytest.mark.parametrize("depth,ref", [(20, 40.6e6), (110, 252.9e6)])
def test_cifar_multiply_adds(depth, ref):
    assert abs(summarize(f"resnet{depth}").macs - ref) / ref < 0.005


@pytest.mark.parametrize("depth", list(IMAGENET))
def test_torchvision_state_dict_loads_and_agrees(depth):
    tv = getattr(torchvision.models, f"resnet{depth}")().eval()
    ours = create_model(f"resnet{depth}", variant="v1.5").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5, rtol=1e-4)
    # The paper variant has the same keys (only the stride moves) ...
    paper = create_model(f"resnet{depth}").eval()
    paper.load_state_dict(tv.state_dict(), strict=True)
    if depth >= 50:  # ... and then computes something else for bottlenecks.
        with torch.no_grad():
            assert not torch.allclose(paper(x), tv(x), atol=1e-3)


def test_stride_placement():
    paper = create_model("resnet50")
    v15 = create_model("resnet50", variant="v1.5")
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)


def _stage_sizes(model, x, names):
    sizes = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[-2:]))
        )
        for n in names
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return [sizes[n] for n in names]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "plain34"])
def test_imagenet_stage_sizes(name):
    m = create_model(name, width=8)  # tiny width: the test is about geometry
    sizes = _stage_sizes(m, torch.randn(1, 3, 224, 224), ["conv1", "layer1", "layer2", "layer3", "layer4"])
    assert sizes == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]


@pytest.mark.parametrize("name", ["resnet20", "plain56"])
def test_cifar_stage_sizes_and_widths(name):
    m = create_model(name)
    sizes = _stage_sizes(m, torch.randn(1, 3, 32, 32), ["layer1", "layer2", "layer3"])
    assert sizes == [(32, 32), (16, 16), (8, 8)]
    assert [m.layer1[0].conv1.out_channels, m.layer2[0].conv1.out_channels,
            m.layer3[0].conv1.out_channels] == [16, 32, 64]
    n_convs = sum(isinstance(x, nn.Conv2d) for x in m.modules())
    n_fc = sum(isinstance(x, nn.Linear) for x in m.modules())
    assert n_convs + n_fc == m.depth  # 6n+2 weighted layers, no projection convs with option A


def test_shortcut_options():
    a = create_model("resnet34", shortcut="A")
    b = create_model("resnet34", shortcut="B")
    c = create_model("resnet34", shortcut="C")
    plain = create_model("plain34")
    # A is parameter-free: same count as the plain net.
    assert count_params(a) == count_params(plain)
    assert count_params(a) < count_params(b) < count_params(c)
    blocks = [blk for layer in (c.layer1, c.layer2, c.layer3, c.layer4) for blk in layer]
    assert all(isinstance(blk.downsample, nn.Sequential) for blk in blocks)  # C: every block
    b_proj = [blk for layer in (b.layer1, b.layer2, b.layer3, b.layer4) for blk in layer
              if blk.downsample is not None]
    assert len(b_proj) == 3  # B: only where dimensions increase
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut)
    assert all(blk.downsample is None and not blk.residual
               for layer in (plain.layer1, plain.layer2) for blk in layer)
    # CIFAR default is A; its params equal the plain twin's.
    assert count_params(create_model("resnet56")) == count_params(create_model("plain56"))
    assert count_params(create_model("resnet56", shortcut="B")) > count_params(create_model("resnet56"))


def test_zero_pad_shortcut_values():
    sc = ZeroPadShortcut(2, 4, 2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y = sc(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 2:]) == 0


def test_residual_block_adds_identity():
    m = create_model("resnet20").eval()
    blk = m.layer1[0]
    for p in (blk.bn2.weight, blk.bn2.bias):
        nn.init.zeros_(p)  # residual branch outputs 0 -> block is relu(identity)
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(blk(x), torch.relu(x))


def test_zero_init_residual_and_he_init():
    m = create_model("resnet18", zero_init_residual=True)
    assert all(float(blk.bn2.weight.abs().sum()) == 0 for layer in (m.layer1, m.layer4) for blk in layer)
    d = create_model("resnet18")
    assert all(float(blk.bn2.weight.min()) == 1 for blk in d.layer1)
    w = d.layer3[0].conv1.weight  # kaiming normal fan_out: std = sqrt(2 / (out * k * k))
    expect = (2.0 / (w.shape[0] * 9)) ** 0.5
    assert abs(float(w.std()) - expect) / expect < 0.05


def test_cifar_builder_any_n_and_channels():
    m = cifar_resnet(n=2, in_chans=1, num_classes=10)
    assert m.depth == 14
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert cifar_plain(depth=8).depth == 8
    assert imagenet_plain(depth=152).layer3[0].residual is False
    assert imagenet_resnet(depth=101, num_classes=5, in_chans=1)(torch.randn(1, 1, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cifar_resnet(depth=21), "depth must be 6n\\+2"),
        (lambda: cifar_resnet(depth=20, n=3), "exactly one of depth"),
        (lambda: cifar_resnet(), "exactly one of depth"),
        (lambda: cifar_resnet(n=0), "n must be an integer >= 1"),
        (lambda: cifar_resnet(depth=20, shortcut="D"), "shortcut must be one of 'A', 'B', 'C'"),
        (lambda: create_model("resnet20", num_classes=0), "num_classes must be an integer >= 1"),
        (lambda: create_model("resnet50", variant="v2"), "variant must be one of 'paper', 'v1.5'"),
        (lambda: imagenet_resnet(depth=42), "depth must be one of 18, 34, 50, 101, 152"),
        (lambda: create_model("resnet51"), "unknown model name 'resnet51'; did you mean"),
        (lambda: create_model("plain18", shortcut="A"), "unknown argument 'shortcut'"),
        (lambda: create_model("resnet20", depth=32), "unknown argument 'depth'"),
        (lambda: create_model("resnet18", in_chans=0), "in_chans must be an integer >= 1"),
    ],
)
def test_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_list_models_pattern():
    assert set(list_models("plain*")) == {"plain18", "plain34", "plain20", "plain32", "plain44", "plain56", "plain110"}
    assert "resnet1202" in list_models("resnet1*")
    assert list_models("nothing*") == []
