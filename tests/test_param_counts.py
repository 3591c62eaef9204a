"""Parameter counts of EVERY registered model, derived here from the papers' layer tables and
figures with a formula written independently of the model code (no builder, config table or
registry pin is read), and the papers' own rounded figures where they print one.

Accounting, as the code documents it and the papers' reference implementations do: a convolution
that BN follows has no bias; BN learns a scale and a shift per channel (2 per channel); a fully
connected layer has a bias. The registry's ``reference["params"]`` pins, where present, must equal
the formula too, so a pin can no longer drift with the code it pins.
"""

from __future__ import annotations

import functools

import pytest
import torch

from reslearn import create_model, list_models, model_info
from reslearn.summary import count_params
from test_inception import _inception_resnet_v1_from_figures


# ----------------------------------------------------------------------------- layer costs
def conv(cin, cout, kh, kw=None, *, bias=False):
    return cin * cout * kh * (kh if kw is None else kw) + (cout if bias else 0)


def fc(cin, cout):
    return cin * cout + cout


def conv_bn(cin, cout, kh, kw=None, *, bn=2):
    """A "conv" box of the Inception figures: convolution, then BN (and ReLU)."""
    return conv(cin, cout, kh, kw) + bn * cout


# ----------------------------------------------------- He et al. 2016a (arXiv:1512.03385)
# Table 1: blocks per stage conv2_x..conv5_x; 18/34 use two 3x3 convs, 50+ bottlenecks
# (1x1, 3x3, 1x1 x4). ResNet-200 is He et al. 2016b, Sec. 5 / Table 5.
TABLE1 = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
          101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3)), 200: (True, (3, 24, 36, 3))}


def residual_stages(cin, base, blocks, *, bottleneck, preact, projection, bn):
    """Stages of ``blocks`` units, ``base * 2**i`` filters in stage i (a bottleneck outputs 4x
    that); returns (parameters, output channels).

    Post-activation (2016a): BN after every conv; ``projection``: a 1x1 conv + BN where the shape
    changes (option B), else nothing there (option A, zero padding; and the plain nets).
    Pre-activation (2016b, Fig. 1b / Sec. 4.1): BN before every conv (on its input), the first
    unit's taken by the BN right after conv1 (counted with the stem), a bare 1x1 projection, and
    one extra BN after the last unit."""
    total = 0
    for stage, n in enumerate(blocks):
        w = base * 2**stage
        cout = 4 * w if bottleneck else w
        for j in range(n):
            layers = [(cin, w, 1), (w, w, 3), (w, cout, 1)] if bottleneck else [(cin, w, 3), (w, w, 3)]
            total += sum(conv(a, b, k) for a, b, k in layers)
            if preact:
                total += bn * sum(a for a, _, _ in layers) - (bn * cin if stage == j == 0 else 0)
            else:
                total += bn * sum(b for _, b, _ in layers)
            if projection and (cin != cout or (stage > 0 and j == 0)):
                total += conv(cin, cout, 1) + (0 if preact else bn * cout)
            cin = cout
    return total + (bn * cin if preact else 0), cin


def imagenet_resnet(depth, *, in_chans=3, classes=1000, shortcuts=True, preact=False, bn=2):
    """Table 1: conv1 7x7 64 (+BN), stages of 64/128/256/512 filters, global pooling, fc; option
    B shortcuts (Sec. 3.3), none in the plain nets."""
    bottleneck, blocks = TABLE1[depth]
    body, cout = residual_stages(64, 64, blocks, bottleneck=bottleneck, preact=preact, projection=shortcuts, bn=bn)
    return conv(in_chans, 64, 7) + bn * 64 + body + fc(cout, classes)


def cifar_resnet(depth, *, bottleneck=False, preact=False, bn=2, classes=10):
    """He et al. 2016a Sec. 4.2: a 3x3 conv of 16 filters (+BN), three stages of n units on
    16/32/64 filters, global pooling, a 10-way fc. Basic units (6n+2 layers, two 3x3 convs) use
    option A (zero padding, no parameters). Bottleneck units (He et al. 2016b, 9n+2 layers: 1x1,
    3x3, 1x1 x4) project with a 1x1 conv where the shape changes (+BN when post-activation, the
    ablations of Table 2)."""
    n = (depth - 2) // (9 if bottleneck else 6)
    body, cout = residual_stages(16, 16, (n, n, n), bottleneck=bottleneck, preact=preact, projection=bottleneck, bn=bn)
    return conv(3, 16, 3) + bn * 16 + body + fc(cout, classes)


def wide_resnet(depth, k, *, bn=2):
    """Zagoruyko & Komodakis 2016, Table 1: conv1 3x3 16, groups of N = (d - 4) / 6 B(3,3) blocks
    16k/32k/64k wide (full pre-activation), a 1x1 conv where width or stride changes, BN, fc 10."""
    n = (depth - 4) // 6
    total, cin = conv(3, 16, 3) + bn * 16, 16
    for group in range(3):
        w = 16 * k * 2**group
        for j in range(n):
            total += conv(cin, w, 3) + conv(w, w, 3) + bn * (cin + w) - (bn * cin if group == j == 0 else 0)
            if cin != w or (group > 0 and j == 0):
                total += conv(cin, w, 1)
            cin = w
    return total + bn * cin + fc(cin, 10)


# -------------------------------------- Szegedy et al. 2017 (arXiv:1602.07261), the figures
def stem_fig3():
    """The stem of Inception-v4 and Inception-ResNet-v2, 299x299x3 -> 35x35x384."""
    c = conv_bn
    return (c(3, 32, 3) + c(32, 32, 3) + c(32, 64, 3) + c(64, 96, 3)  # to 73x73x160 (with a max pool)
            + c(160, 64, 1) + c(64, 96, 3)  # to 71x71x192: left branch
            + c(160, 64, 1) + c(64, 64, 7, 1) + c(64, 64, 1, 7) + c(64, 96, 3)  # right branch
            + c(192, 192, 3))  # 35x35x384 (with a max pool)


def inception_v4():
    """Fig. 9: Fig. 3's stem, 4 x Inception-A (Fig. 4), Reduction-A (Fig. 7), 7 x Inception-B
    (Fig. 5), Reduction-B (Fig. 8), 3 x Inception-C (Fig. 6), fc."""
    c = conv_bn
    a = c(384, 96, 1) + c(384, 96, 1) + c(384, 64, 1) + c(64, 96, 3) + c(384, 64, 1) + c(64, 96, 3) + c(96, 96, 3)
    k, l, m, n = 192, 224, 256, 384  # Table 1
    red_a = c(384, n, 3) + c(384, k, 1) + c(k, l, 3) + c(l, m, 3)  # Fig. 7: 384 + n + m = 1024
    b = (c(1024, 128, 1) + c(1024, 384, 1) + c(1024, 192, 1) + c(192, 224, 1, 7) + c(224, 256, 7, 1)
         + c(1024, 192, 1) + c(192, 192, 1, 7) + c(192, 224, 7, 1) + c(224, 224, 1, 7) + c(224, 256, 7, 1))
    red_b = c(1024, 192, 1) + c(192, 192, 3) + c(1024, 256, 1) + c(256, 256, 1, 7) + c(256, 320, 7, 1) + c(320, 320, 3)
    cc = (c(1536, 256, 1) + c(1536, 256, 1) + c(1536, 384, 1) + c(384, 256, 1, 3) + c(384, 256, 3, 1)
          + c(1536, 384, 1) + c(384, 448, 1, 3) + c(448, 512, 3, 1) + c(512, 256, 3, 1) + c(512, 256, 1, 3))
    return stem_fig3() + 4 * a + red_a + 7 * b + red_b + 3 * cc + fc(1536, 1000)


def _ir_v2_blocks(width_a, width_b, width_c):
    """Figs. 16, 17, 19 (Inception-ResNet-v2's A, B, C) on inputs of the given widths, each with
    its "1x1 Conv (Linear)" back to the input width (bias, no BN)."""
    c = conv_bn
    a = c(width_a, 32, 1) + c(width_a, 32, 1) + c(32, 32, 3) + c(width_a, 32, 1) + c(32, 48, 3) + c(48, 64, 3)
    b = c(width_b, 192, 1) + c(width_b, 128, 1) + c(128, 160, 1, 7) + c(160, 192, 7, 1)
    cc = c(width_c, 192, 1) + c(width_c, 192, 1) + c(192, 224, 1, 3) + c(224, 256, 3, 1)
    return (a + conv(128, width_a, 1, bias=True), b + conv(384, width_b, 1, bias=True),
            cc + conv(448, width_c, 1, bias=True))


def _ir_v2_reductions(width):
    """Reduction-A (Fig. 7, k, l, m, n = 256, 256, 384, 384) and Reduction-B (Fig. 18)."""
    c = conv_bn
    red_a = c(width, 384, 3) + c(width, 256, 1) + c(256, 256, 3) + c(256, 384, 3)
    wb = width + 384 + 384
    red_b = c(wb, 256, 1) + c(256, 384, 3) + c(wb, 256, 1) + c(256, 288, 3) + c(wb, 256, 1) + c(256, 288, 3) + c(288, 320, 3)
    return red_a, red_b, wb, wb + 384 + 288 + 320


def inception_resnet_v2_paper():
    """The figures literally: Fig. 3's stem (384), 5/10/5 blocks (Fig. 15). Figs. 17 and 19 print
    residual widths 1154 and 2048, but a sum needs its input's width: 1152 and 2144 here."""
    red_a, red_b, wb, wc = _ir_v2_reductions(384)
    a, b, cc = _ir_v2_blocks(384, wb, wc)
    return stem_fig3() + 5 * a + red_a + 10 * b + red_b + 5 * cc + fc(wc, 1000)


def inception_resnet_v2_released():
    """The network released with the paper (TF-slim ``inception_resnet_v2``, which timm ports):
    Fig. 14's stem to 71x71x192, a max pool, "Mixed_5b" (1x1 96 | 1x1 48, 5x5 64 | 1x1 64, 3x3 96,
    3x3 96 | avg pool, 1x1 64) = 320; 10/20/10 blocks with the figures' branch widths at 320,
    1088, 2080; then a 1x1 conv of 1536 (BN) before pooling."""
    c = conv_bn
    stem = c(3, 32, 3) + c(32, 32, 3) + c(32, 64, 3) + c(64, 80, 1) + c(80, 192, 3)
    mixed_5b = c(192, 96, 1) + c(192, 48, 1) + c(48, 64, 5) + c(192, 64, 1) + c(64, 96, 3) + c(96, 96, 3) + c(192, 64, 1)
    red_a, red_b, wb, wc = _ir_v2_reductions(320)
    a, b, cc = _ir_v2_blocks(320, wb, wc)
    assert (wb, wc) == (1088, 2080)
    return stem + mixed_5b + 10 * a + red_a + 20 * b + red_b + 10 * cc + c(2080, 1536, 1) + fc(1536, 1000)


# ------------------------------------------------------------------------ the applications
def kws_resnet(name):
    """Tang & Lin 2018 (arXiv:1710.10361), Fig. 1 / Table 1: resN has N weight layers, a first
    3x3 conv, N - 2 more 3x3 convs (in residual pairs) and the fc; 45 feature maps, 19 in the
    "-narrow" nets; bias-free convs, BN without learned scale or shift (castorini/honk), fc into
    12 classes."""
    depth, maps = int(name[3:].split("-")[0]), 19 if name.endswith("-narrow") else 45
    return conv(1, maps, 3) + (depth - 2) * conv(maps, maps, 3) + fc(maps, 12)


def lstm(inputs, hidden):
    """One direction of an LSTM: four gates over [input, previous output]; PyTorch keeps two
    bias vectors (b_ih and b_hh) where the LSTM equations have one."""
    return 4 * hidden * (inputs + hidden) + 2 * 4 * hidden


def wrbn(*, scale=1.0, blocks=3, hidden=512, ff=1024, bins=80, classes=11):
    """Heymann, Drude & Haeb-Umbach 2016 (CHiME-4): conv 3x3 16, three ResBlocks of widths 80,
    160, 320 (x ``scale``), N units each (BN-ELU-conv 3x3-BN-ELU-dropout-conv 3x3; the first
    with a 1x1 conv shortcut), BN, a learned weighted sum over the F = 80 / 8 frequency bins
    per channel (plus a bias), BLSTM 512 (directions summed), BLSTM 512 (concatenated), two
    feed-forward layers of 1024 (linear, BN, ELU) and the output layer."""
    stem = round(16 * scale)
    widths = [round(w * scale) for w in (80, 160, 320)]
    total, cin = conv(1, stem, 3), stem
    for w in widths:
        total += 2 * cin + conv(cin, w, 3) + 2 * w + conv(w, w, 3) + conv(cin, w, 1)  # BlockA
        total += (blocks - 1) * (2 * w + conv(w, w, 3) + 2 * w + conv(w, w, 3))  # BlockB
        cin = w
    f = bins // 2 // 1 // 2 // 2  # frequency strides 2; 1, 2, 2 (time keeps its resolution)
    total += 2 * cin + (cin * f + cin)  # final BN, frequency pooling
    total += 2 * lstm(cin, hidden) + 2 * lstm(hidden, hidden)
    total += (conv(2 * hidden, ff, 1) + 2 * ff) + (conv(ff, ff, 1) + 2 * ff)  # bias-free linear + BN
    return total + fc(ff, classes)


def highway_fc(depth=50, width=50):
    """Srivastava et al. 2015, Sec. 3.1 / Fig. 1: a plain fc layer 784 -> 50, depth - 1 highway
    layers of 50 blocks (H and the transform gate T, each a full layer with bias; C = 1 - T),
    and the softmax layer."""
    return fc(784, width) + (depth - 1) * 2 * fc(width, width) + fc(width, 10)


def highway_cifar():
    """Table 1's 19-layer highway net as the authors' Caffe file: conv 3x3 32 + 4 highway, pool,
    conv 3x3 80 + 5 highway, pool, conv 3x3 128 + 5 highway, conv 1x1 100, fc. H and T are 3x3
    convs with bias; no BN."""
    total, cin = 0, 3
    for width, layers in ((32, 4), (80, 5), (128, 5)):
        total += conv(cin, width, 3, bias=True) + layers * 2 * conv(width, width, 3, bias=True)
        cin = width
    return total + conv(128, 100, 1, bias=True) + fc(100, 10)


# ---------------------------------------------------------- every registered name, and source
P = functools.partial
EXPECTED = {
    **{f"resnet{d}": P(imagenet_resnet, d) for d in (18, 34, 50, 101, 152)},
    **{f"plain{d}": P(imagenet_resnet, d, shortcuts=False) for d in (18, 34)},
    **{f"resnet{d}": P(cifar_resnet, d) for d in (20, 32, 44, 56, 110, 1202)},
    **{f"plain{d}": P(cifar_resnet, d) for d in (20, 32, 44, 56, 110)},  # option A: no parameters
    "inception_v4": inception_v4,
    "inception_resnet_v1": _inception_resnet_v1_from_figures,  # Figs. 10-15, in test_inception.py
    "inception_resnet_v2": inception_resnet_v2_released,
    # Wu et al. 2018: the registered depth 50 is ResNet-50's body on one channel (the fixed KV
    # filter is a buffer, not a parameter), its fc 2048 -> 1000, a ReLU, then fc 1000 -> 2.
    "drn_stego": lambda: imagenet_resnet(50, in_chans=1) + fc(1000, 2),
    **{name: P(kws_resnet, name) for name in
       ("res8", "res8-narrow", "res15", "res15-narrow", "res26", "res26-narrow")},
    "wrbn": wrbn,
    "wrbn-small": P(wrbn, scale=0.25, blocks=1, hidden=96, ff=96),
    # Lee et al. 2018: three ResNet-50s, each with a single output unit.
    "age_gender_resnet50": lambda: 3 * imagenet_resnet(50, classes=1),
    # He et al. 2016b: Table 3 (110 basic units, option A; 164 and 1001 bottlenecks), Table 2's
    # ablations on the original (post-activation) unit, and Table 5's ImageNet nets.
    "preact_resnet110": P(cifar_resnet, 110, preact=True),
    "preact_resnet164": P(cifar_resnet, 164, bottleneck=True, preact=True),
    "preact_resnet1001": P(cifar_resnet, 1001, bottleneck=True, preact=True),
    "resnet110_ablation": P(cifar_resnet, 110),
    "resnet164_ablation": P(cifar_resnet, 164, bottleneck=True),
    **{f"preact_resnet{d}": P(imagenet_resnet, d, preact=True) for d in (18, 34, 50, 101, 152, 200)},
    **{f"wrn_{d}_{k}": P(wide_resnet, d, k) for d, k in ((16, 4), (16, 8), (28, 10), (40, 4), (40, 10))},
    "highway_fc_mnist": highway_fc,
    "highway_cifar": highway_cifar,
}

# Figures the papers print, rounded, with the count they round (see each comment).
PAPER_FIGURES = {
    # He et al. 2016a, Table 6 ("# params")
    **{f"resnet{d}": f for d, f in ((20, "0.27M"), (32, "0.46M"), (44, "0.66M"), (56, "0.85M"),
                                       (110, "1.7M"), (1202, "19.4M"))},
    # Tang & Lin 2018, Table 2 ("Par.")
    **{n: f for n, f in (("res8", "110K"), ("res8-narrow", "19.9K"), ("res15", "238K"),
                         ("res15-narrow", "42.6K"), ("res26", "438K"), ("res26-narrow", "78.4K"))},
    # He et al. 2016b, Tables 3-4 (1001: see test_preact_resnet1001_paper_figure_counts_weights)
    "preact_resnet110": "1.7M", "preact_resnet164": "1.7M",
    # Zagoruyko & Komodakis 2016, Tables 4-5
    "wrn_16_4": "2.7M", "wrn_16_8": "11.0M", "wrn_28_10": "36.5M", "wrn_40_4": "8.9M",
    # Srivastava et al. 2015, Table 1
    "highway_cifar": "2.3M",
}


def _rounded(count: int, figure: str) -> str:
    """``count`` printed as ``figure`` is (same unit, same number of decimals)."""
    unit = figure[-1]
    decimals = len(figure[:-1].partition(".")[2])
    return f"{count / {'K': 1e3, 'M': 1e6}[unit]:.{decimals}f}{unit}"


@functools.lru_cache(maxsize=None)
def _count(name, items=()):
    with torch.device("meta"):  # no memory, no init time: parameter shapes only
        return count_params(create_model(name, **dict(items)))


def test_every_registered_model_has_an_independent_count():
    assert set(EXPECTED) == set(list_models()), "a model without a formula here, or a formula without a model"


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_from_the_papers_tables(name):
    expected = EXPECTED[name]()
    assert _count(name) == expected
    pin = model_info(name).reference.get("params")
    assert pin is None or pin == expected, "the registry's pin disagrees with the paper's tables"


@pytest.mark.parametrize("name,figure", PAPER_FIGURES.items())
def test_rounded_figure_the_paper_prints(name, figure):
    assert _rounded(_count(name), figure) == figure


def test_preact_resnet1001_paper_figure_counts_weights():
    # Table 3/4's "10.2M" for ResNet-1001 rounds its conv and fc weights alone (10,178,490); the
    # 149,216 BN scales and shifts on top make our exact count 10,327,706 (10.3M).
    weights = cifar_resnet(1001, bottleneck=True, preact=True, bn=0)
    assert _rounded(weights, "10.2M") == "10.2M"
    assert _count("preact_resnet1001") - weights == 149_216
    assert _rounded(_count("preact_resnet1001"), "10.3M") == "10.3M"


def test_inception_resnet_v2_paper_variant_follows_the_figures():
    assert _count("inception_resnet_v2", (("variant", "paper"),)) == inception_resnet_v2_paper()


@pytest.mark.parametrize("name,published", [("inception_v4", "42.68M"), ("inception_resnet_v2", "55.84M")])
def test_inception_counts_match_the_released_models(name, published):
    # The paper prints no count; the released TF-slim checkpoints (as timm ports them) hold these.
    assert _rounded(EXPECTED[name](), published) == published
