"""Szegedy et al. 2017 (arXiv:1602.07261): Inception-v4 and Inception-ResNet-v1/v2.

Structure checks run on the meta device (shapes and parameter counts cost no memory or time);
only the hand-checked blocks and the head run real numbers.
"""

import functools

import pytest
import torch
import torch.nn as nn

from reslearn import create_model, model_info
from reslearn.cli import main
from reslearn.models.inception_resnet import (
    IR_C_V1,
    BlockSpec,
    Conv,
    InceptionBlock,
)
from reslearn.summary import count_params, summarize


def _meta(name, **kwargs):
    return _meta_cached(name, tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=None)
def _meta_cached(name, items):
    # Tests only read these models, so one build per configuration serves them all.
    with torch.device("meta"):
        return create_model(name, **dict(items))


def _stage_shapes(model, hw):
    """(C, H, W) of every feature stage for an input of ``hw`` (H, W), on the meta device."""
    shapes = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: shapes.__setitem__(n, list(o.shape[1:]))
        )
        for n in model.stage_names[:-1]
    ]
    try:
        with torch.no_grad():
            model.eval().forward_features(torch.zeros(1, 3, *hw, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return shapes


# --------------------------------------------------------------------------- parameter counts
def _conv_bn(cin, cout, kh, kw=None):
    """A figure's conv box: weights, no bias, BN scale and shift."""
    return cin * cout * kh * (kh if kw is None else kw) + 2 * cout


def _linear_1x1(cin, cout):
    """An Inception-ResNet block's "1x1 Conv (Linear)": weights and bias, no BN."""
    return cin * cout + cout


def _inception_resnet_v1_from_figures():
    # Widths read off the figures, independently of the model code.
    c, lin = _conv_bn, _linear_1x1
    stem = c(3, 32, 3) + c(32, 32, 3) + c(32, 64, 3) + c(64, 80, 1) + c(80, 192, 3) + c(192, 256, 3)
    a = 3 * c(256, 32, 1) + 3 * c(32, 32, 3) + lin(96, 256)  # Fig. 10
    red_a = c(256, 384, 3) + c(256, 192, 1) + c(192, 192, 3) + c(192, 256, 3)  # k,l,m,n Table 1
    b = 2 * c(896, 128, 1) + c(128, 128, 1, 7) + c(128, 128, 7, 1) + lin(256, 896)  # Fig. 11
    red_b = 3 * c(896, 256, 1) + c(256, 384, 3) + 3 * c(256, 256, 3)  # Fig. 12
    cc = 2 * c(1792, 192, 1) + c(192, 192, 1, 3) + c(192, 192, 3, 1) + lin(384, 1792)  # Fig. 13
    fc = 1792 * 1000 + 1000
    return stem + 5 * a + red_a + 10 * b + red_b + 5 * cc + fc  # 5/10/5 blocks, Fig. 15


@pytest.mark.parametrize(
    "name,kwargs,params",
    [
        ("inception_v4", {}, 42_679_816),
        ("inception_resnet_v1", {}, 22_756_328),
        ("inception_resnet_v2", {}, 55_843_464),
        ("inception_resnet_v2", {"variant": "paper"}, 32_433_928),
    ],
)
def test_parameter_counts_exact(name, kwargs, params):
    assert count_params(_meta(name, **kwargs)) == params
    if not kwargs:
        assert model_info(name).reference["params"] == params


def test_inception_resnet_v1_count_follows_the_figures():
    assert count_params(_meta("inception_resnet_v1")) == _inception_resnet_v1_from_figures()


@pytest.mark.parametrize(
    "name,timm_params", [("inception_v4", 42.68e6), ("inception_resnet_v2", 55.84e6)]
)
def test_within_a_tenth_of_a_percent_of_timm(name, timm_params):
    # timm ports Google's TF-slim checkpoints: no auxiliary head, bias-free convs under BN,
    # affine BN, biased "linear" 1x1s in the residual blocks: the same layout as ours.
    assert abs(count_params(_meta(name)) - timm_params) / timm_params < 1e-3


@pytest.mark.parametrize("name,gmacs", [("inception_v4", 12.3), ("inception_resnet_v2", 13.2)])
def test_multiply_adds_near_timm_model_cards(name, gmacs):
    # timm's model cards give 12.3 and 13.2 GMACs at 299x299, rounded to 0.1G.
    assert abs(summarize(name).macs / 1e9 - gmacs) <= 0.06


def test_classes_and_input_channels_change_only_the_ends():
    base = count_params(_meta("inception_v4"))
    assert count_params(_meta("inception_v4", num_classes=10)) == base - 990 * 1537
    assert count_params(_meta("inception_v4", in_chans=1)) == base - 2 * 32 * 9


# --------------------------------------------------------------------------- geometry
# Channels on the 35x35, 17x17 and 8x8 grids at 299x299 (Figs. 9 and 15).
GRIDS = {
    ("inception_v4", None): ("inception", (384, 1024, 1536)),
    ("inception_resnet_v1", None): ("inception_resnet", (256, 896, 1792)),  # printed in Fig. 15
    # 1152 and 2144: what Reduction-A/B give, not Fig. 17/19's "1154" and "2048".
    ("inception_resnet_v2", "paper"): ("inception_resnet", (384, 1152, 2144)),
    ("inception_resnet_v2", "released"): ("inception_resnet", (320, 1088, 2080)),
}


def _expected_grids(prefix, widths):
    (w35, w17, w8), out = widths, {}
    for stage, (c, hw) in zip(
        ("stem", f"{prefix}_a", "reduction_a", f"{prefix}_b", "reduction_b", f"{prefix}_c"),
        ((w35, 35), (w35, 35), (w17, 17), (w17, 17), (w8, 8), (w8, 8)),
    ):
        out[stage] = [c, hw, hw]
    return out


@pytest.mark.parametrize("name,variant", list(GRIDS))
def test_stage_outputs_at_299(name, variant):
    assert model_info(name).input_size == (3, 299, 299)
    model = _meta(name, **({"variant": variant} if variant else {}))
    expected = _expected_grids(*GRIDS[name, variant])
    if variant == "released":
        expected["conv_head"] = [1536, 8, 8]  # the released model's last 1x1 conv
    assert _stage_shapes(model, (299, 299)) == expected


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v1", "inception_resnet_v2"])
def test_registered_test_input_is_the_smallest_that_works(name):
    h = model_info(name).test_input_size[1]
    model = _meta(name)
    assert _stage_shapes(model, (h, h))["reduction_b"][1:] == [1, 1]
    with pytest.raises(RuntimeError):
        _stage_shapes(model, (h - 1, h))


@pytest.mark.parametrize(
    "name,klmn",
    [
        ("inception_v4", (192, 224, 256, 384)),  # Table 1
        ("inception_resnet_v1", (192, 192, 256, 384)),
        ("inception_resnet_v2", (256, 256, 384, 384)),
    ],
)
def test_reduction_a_uses_table_1(name, klmn):
    k, l, m, n = klmn
    _, conv_n, chain = _meta(name).reduction_a.body.branches
    assert conv_n.conv.out_channels == n and conv_n.conv.stride == (2, 2)
    assert [u.conv.out_channels for u in chain] == [k, l, m]


def test_block_counts_follow_figures_9_and_15():
    v4, v1 = _meta("inception_v4"), _meta("inception_resnet_v1")
    assert [len(v4.get_submodule(f"inception_{g}")) for g in "abc"] == [4, 7, 3]
    assert [len(v1.get_submodule(f"inception_resnet_{g}")) for g in "abc"] == [5, 10, 5]
    paper = _meta("inception_resnet_v2", variant="paper")
    released = _meta("inception_resnet_v2")
    assert [len(paper.get_submodule(f"inception_resnet_{g}")) for g in "abc"] == [5, 10, 5]
    assert [len(released.get_submodule(f"inception_resnet_{g}")) for g in "abc"] == [10, 20, 10]


def test_bn_epsilon_and_bias_free_convs_under_bn():
    m = _meta("inception_resnet_v1")
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert bns and all(bn.eps == 1e-3 for bn in bns)
    biased = [x for x in m.modules() if isinstance(x, nn.Conv2d) and x.bias is not None]
    # only the 20 residual blocks' linear 1x1s have a bias
    assert len(biased) == 20 and all(x.kernel_size == (1, 1) for x in biased)


# --------------------------------------------------------------------------- residual scaling
@pytest.mark.parametrize("scale", [0.1, 0.3])
def test_residual_scaling_is_applied(scale):
    # Inception-ResNet-C of Fig. 13 with the linear 1x1 set to output exactly 1 everywhere:
    # the block must return relu(x + scale * 1), i.e. x + scale for positive x.
    block = InceptionBlock(IR_C_V1, 1792, scale=scale).eval()
    nn.init.zeros_(block.proj.weight)
    nn.init.ones_(block.proj.bias)
    x = torch.rand(2, 1792, 3, 3) + 0.01
    with torch.no_grad():
        assert torch.allclose(block(x), x + scale, atol=1e-6)
        assert torch.equal(block(-x - 1), torch.zeros_like(x))  # ReLU after the sum


def test_residual_scale_reaches_every_residual_block():
    m = _meta("inception_resnet_v1", residual_scale=(0.1, 0.2, 0.3))
    for grid, s in zip("abc", (0.1, 0.2, 0.3)):
        assert {b.scale for b in m.get_submodule(f"inception_resnet_{grid}")} == {s}
    one = _meta("inception_resnet_v1", residual_scale=0.25)
    assert {b.scale for b in one.inception_resnet_b} == {0.25}


def test_released_v2_last_block_is_linear_and_unscaled():
    m = _meta("inception_resnet_v2")
    *rest, last = m.inception_resnet_c
    assert last.scale == 1.0 and isinstance(last.relu, nn.Identity)
    assert all(b.scale == 0.2 and isinstance(b.relu, nn.ReLU) for b in rest)


def test_plain_block_has_no_shortcut():
    spec = BlockSpec("one conv", (Conv(3, 1),))  # a one-layer chain, no residual
    block = InceptionBlock(spec, 2)
    assert block.out_channels == 3 and not hasattr(block, "proj")


# --------------------------------------------------------------------------- head and options
def test_dropout_before_classifier_keep_prob_0_8():
    m = create_model("inception_resnet_v1", num_classes=3)
    assert m.drop.p == pytest.approx(0.2)
    feats = torch.ones(64, m.num_features)
    m.train()
    assert torch.equal(m.forward_head(feats, pre_logits=True), feats)  # dropout is not pre-logit
    nn.init.ones_(m.fc.weight)
    nn.init.zeros_(m.fc.bias)
    train_out = m.forward_head(feats).detach()
    m.eval()
    eval_out = m.forward_head(feats).detach()
    assert torch.equal(eval_out, torch.full_like(eval_out, m.num_features))
    assert not torch.equal(train_out, eval_out)
    assert torch.allclose(train_out.mean(), eval_out.mean(), rtol=0.05)  # inverted dropout


@pytest.mark.parametrize(
    "name,kwargs,arg",
    [
        ("inception_resnet_v1", {"residual_scale": 0}, "residual_scale"),
        ("inception_resnet_v1", {"residual_scale": 1.5}, "residual_scale"),
        ("inception_resnet_v2", {"residual_scale": (0.1, 0.2)}, "residual_scale"),
        ("inception_resnet_v2", {"residual_scale": True}, "residual_scale"),
        ("inception_resnet_v2", {"residual_scale": None}, "residual_scale"),
        ("inception_resnet_v2", {"variant": "v3"}, "variant"),
        ("inception_v4", {"drop_rate": 1.0}, "drop_rate"),
        ("inception_v4", {"in_chans": 0}, "in_chans"),
        ("inception_v4", {"residual_scale": 0.2}, "residual_scale"),  # v4 has no residuals
    ],
)
def test_invalid_options_name_the_argument(name, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        _meta(name, **kwargs)


def test_residual_scale_one_is_allowed():
    unscaled = _meta("inception_resnet_v1", residual_scale=1.0)
    assert {b.scale for b in unscaled.inception_resnet_a} == {1.0}


def test_summary_cli(capsys):
    assert main(["summary", "inception_resnet_v2"]) == 0
    out = capsys.readouterr().out
    assert "Inception-ResNet-B (Fig. 17)" in out and "x 20" in out
    assert "2080x8x8" in out and "55,843,464" in out
