"""Keyword-spotting ResNets (Tang & Lin 2018) and the WRBN (Heymann et al. 2016): structure
against the papers' descriptions, honk's wiring, multiply counts, and the BLSTM details."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reslearn import create_model, model_info
from reslearn.models.kws_resnet import KWS_CONFIGS, KWSResNet, paper_multiplies
from reslearn.models.wrbn import BLSTM, WRBN, WRBNBlock, wrbn
from reslearn.summary import count_params, summarize

KWS = list(KWS_CONFIGS)


@pytest.mark.parametrize("name", KWS)
def test_kws_parameters_are_convolutions_and_fc_only(name):
    cfg = KWS_CONFIGS[name]
    with torch.device("meta"):
        model = create_model(name)
    m = cfg["maps"]
    # bias-free 3x3 convs (1 -> m, then `layers` times m -> m), no BN parameters, fc with bias
    expected = 9 * m + cfg["layers"] * 9 * m * m + m * 12 + 12
    assert count_params(model) == expected == model_info(name).reference["params"]
    bns = [mod for mod in model.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == cfg["layers"] and not any(bn.affine for bn in bns)
    convs = [mod for mod in model.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == cfg["layers"] + 1 and all(c.bias is None for c in convs)


def test_kws_dilation_and_pooling_follow_the_paper():
    res15 = create_model("res15")
    convs = [mod for mod in res15.modules() if isinstance(mod, nn.Conv2d)][1:]
    assert [c.dilation[0] for c in convs] == [1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16]
    assert all(c.padding == c.dilation for c in convs)  # "same" size
    x = torch.randn(2, 1, 101, 40)
    shapes = {}
    for name in ("res8", "res15", "res26-narrow"):
        model = create_model(name).eval()
        with torch.no_grad():
            shapes[name] = tuple(model.forward_features(x).shape)
    assert shapes == {
        "res8": (2, 45, 25, 13),  # 4x3 average pooling of 101x40
        "res15": (2, 45, 101, 40),
        "res26-narrow": (2, 19, 50, 20),  # 2x2
    }


def _honk_forward(model: KWSResNet, x: torch.Tensor) -> torch.Tensor:
    """honk's SpeechResModel.forward, written from its description, on our modules' weights:
    conv_i -> ReLU, every second layer add the previous sum, then BN_i."""
    blocks = list(model.blocks)
    convs, bns = [], []
    for j, blk in enumerate(blocks):
        convs += [blk.conv1, blk.conv2]
        bns += [blk.bn1, blocks[j + 1].pre if j + 1 < len(blocks) else model.tail[0]]
    if model.layers % 2:
        convs.append(model.tail[1])
        bns.append(model.tail[3])
    x = model.pool(F.relu(model.conv0(x)))
    old = x
    for i, (conv, bn) in enumerate(zip(convs, bns), start=1):
        y = F.relu(conv(x))
        if i % 2 == 0:
            y = y + old
            old = y
        x = bn(y)
    return model.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["res8-narrow", "res15-narrow"])
def test_kws_computes_what_honk_computes(name):
    model = create_model(name).eval()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):  # make every BN matter
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 1, 101, 40)
    with torch.no_grad():
        assert torch.allclose(model(x), _honk_forward(model, x), atol=1e-5)


@pytest.mark.parametrize("name", KWS)
def test_multiplies_reconcile_with_the_paper(name):
    cfg, ref = KWS_CONFIGS[name], model_info(name).reference
    # The paper's accounting (unpadded positions) lands on Table 2; "30M" for res8 is rounded.
    paper = paper_multiplies(**cfg)
    assert abs(paper - ref["paper_mults"]) / ref["paper_mults"] < (0.03 if name == "res8" else 0.015)
    # What `reslearn summary` reports: every output position of every conv, plus the fc.
    h, w = 101, 40
    first = h * w * 9 * cfg["maps"]
    if cfg["pool"]:
        h, w = h // cfg["pool"][0], w // cfg["pool"][1]
    executed = first + cfg["layers"] * h * w * 9 * cfg["maps"] ** 2 + cfg["maps"] * 12
    assert summarize(name).macs == executed
    assert executed > paper


def test_wrbn_blocks_follow_the_description():
    model = create_model("wrbn")
    stages = [model.res1, model.res2, model.res3]
    assert [len(s) for s in stages] == [3, 3, 3]
    order = ["bn1", "act1", "conv1", "bn2", "act2", "drop", "conv2", "shortcut"]
    for stage, width, stride in zip(stages, (80, 160, 320), (1, 2, 2)):
        a, *bs = stage
        assert [n for n, _ in a.named_children()] == order
        types = [nn.BatchNorm2d, nn.ELU, nn.Conv2d, nn.BatchNorm2d, nn.ELU, nn.Dropout, nn.Conv2d]
        assert [type(m) for m in list(a.children())[:7]] == types
        assert a.conv1.stride == (stride, 1) and a.conv2.stride == (1, 1)  # frequency only
        assert a.conv1.kernel_size == a.conv2.kernel_size == (3, 3)
        assert a.drop.p == 0.5 and a.conv1.out_channels == width
        assert a.shortcut.kernel_size == (1, 1) and a.shortcut.stride == (stride, 1)
        assert all(isinstance(b, WRBNBlock) and b.shortcut is None for b in bs)
    assert model.stem.out_channels == 16 and model.stem.stride == (2, 1)


def test_wrbn_shapes_and_recurrent_part():
    model = create_model("wrbn").eval()
    x = torch.randn(2, 1, 80, 7)
    with torch.no_grad():
        conv = model.conv_features(x)
        assert conv.shape == (2, 320, 10, 7)  # B x 320 x F x T, F = 80 / 8
        pooled = model.pool(conv)
        assert pooled.shape == (2, 7, 320)
        # one learned weight vector over the 10 bins for each of the 320 channels
        assert model.pool.weight.shape == (320, 10)
        h1 = model.blstm1(pooled)
        y, _ = model.blstm1.lstm(pooled)
        assert h1.shape == (2, 7, 512) and torch.allclose(h1, y[..., :512] + y[..., 512:])
        h2 = model.blstm2(h1)
        y2, _ = model.blstm2.lstm(h1)
        assert h2.shape == (2, 7, 1024) and torch.allclose(h2, y2)  # concatenated
        out = model(x)
    assert out.shape == (2, 7, 11)
    assert model.blstm1.lstm.hidden_size == model.blstm2.lstm.hidden_size == 512
    assert model.blstm1.drop.p == model.blstm2.drop.p == model.drop.p == 0.5
    assert [type(m) for m in model.ff[0].children()] == [nn.Linear, nn.BatchNorm1d, nn.ELU]
    assert len(model.ff) == 2 and model.num_features == 1024


def test_blstm_packing_ignores_padding():
    torch.manual_seed(0)
    layer = BLSTM(6, 5, merge="concat", dropout=0.0).eval()
    x = torch.randn(2, 9, 6)
    lengths = torch.tensor([9, 4])
    with torch.no_grad():
        padded = layer(x, lengths)
        alone = layer(x[1:, :4])
    assert torch.allclose(padded[1, :4], alone[0], atol=1e-6)
    assert torch.all(padded[1, 4:] == 0)


def test_blstm_matches_packed_sequences():
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    layer = BLSTM(4, 3, merge="concat", dropout=0.0)
    x = torch.randn(3, 7, 4, requires_grad=True)
    lengths = torch.tensor([5, 7, 2])
    ours = layer(x, lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref, _ = pad_packed_sequence(layer.lstm(packed)[0], batch_first=True, total_length=7)
    assert torch.allclose(ours, ref, atol=1e-6)
    w = torch.randn_like(ref)
    g_ours = torch.autograd.grad((ours * w).sum(), [x, *layer.parameters()])
    g_ref = torch.autograd.grad((ref * w).sum(), [x, *layer.parameters()])
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-5)
    # one nn.LSTM holds the weights of both directions (torch's keys, nothing else)
    assert list(layer.state_dict()) == [f"lstm.{n}" for n in layer.lstm._flat_weights_names]


def test_wrbn_small_and_options():
    small = create_model("wrbn-small")
    assert isinstance(small, WRBN) and small.res3[0].conv1.out_channels == 80
    shared = wrbn(width_scale=0.25, blocks=1, lstm_hidden=16, ff_size=16, freq_pool="shared")
    assert shared.pool.weight.shape == (1, 10)
    with pytest.raises(ValueError, match="freq_pool"):
        wrbn(freq_pool="mean")
    with pytest.raises(ValueError, match="width_scale"):
        wrbn(width_scale=0)
    with pytest.raises(ValueError, match="input must be"):
        small(torch.randn(1, 1, 40, 5))
