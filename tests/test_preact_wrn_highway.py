"""He et al. 2016b (pre-activation units, Tables 1-2 ablations), Zagoruyko & Komodakis 2016 (Wide
ResNets) and Srivastava et al. 2015 (highway networks): structure, hand-computed outputs, counts."""

import operator

import pytest
import torch
import torch.fx
import torch.nn as nn

from reslearn import create_model, model_info
from reslearn.layers import ORDERINGS, BasicUnit, BottleneckUnit, SigmoidGate, ZeroPadShortcut
from reslearn.models.highway import HighwayLayer, PlainLayer, highway_fc
from reslearn.models.preact_resnet import TABLE1_CIFAR10_ERROR, preact_cifar_resnet
from reslearn.models.wide_resnet import wide_resnet
from reslearn.summary import count_params, format_summary, summarize


def _meta(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


_MODULE_OPS = {"Conv2d": "conv", "BatchNorm2d": "bn", "ReLU": "relu", "Dropout": "dropout"}
_FUNCTION_OPS = {operator.add: "add", torch.nn.functional.relu: "relu"}


def _ops(module):
    """The unit's computation in execution order, from its traced graph."""
    ops = []
    for node in torch.fx.symbolic_trace(module).graph.nodes:
        if node.op == "call_module":
            kind = type(module.get_submodule(node.target)).__name__
            ops.append(_MODULE_OPS.get(kind, node.target))
        elif node.op == "call_function":
            ops.append(_FUNCTION_OPS.get(node.target, str(node.target)))
    return ops


# --------------------------------------------------------------------------- Table 2 / Fig. 4
EXPECTED_ORDER = {
    "original": ["conv", "bn", "relu", "conv", "bn", "add", "relu"],
    "bn_after_addition": ["conv", "bn", "relu", "conv", "add", "bn", "relu"],
    "relu_before_addition": ["conv", "bn", "relu", "conv", "bn", "relu", "add"],
    "relu_only_preact": ["relu", "conv", "bn", "relu", "conv", "bn", "add"],
    "full_preact": ["bn", "relu", "conv", "bn", "relu", "conv", "add"],
}


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_unit_orderings_of_fig4(ordering):
    assert _ops(BasicUnit(4, 4, ordering=ordering)) == EXPECTED_ORDER[ordering]


def test_full_preact_bottleneck_and_dropout_between_convs():
    assert _ops(BottleneckUnit(16, 4)) == ["bn", "relu", "conv"] * 3 + ["add"]
    assert _ops(BasicUnit(4, 4, dropout=0.3)) == [
        "bn", "relu", "conv", "bn", "relu", "dropout", "conv", "add"
    ]


def test_projection_takes_the_shared_preactivation():
    unit = BottleneckUnit(16, 16, stride=2)  # 16 -> 64 channels, stride 2: a projection
    graph = torch.fx.symbolic_trace(unit).graph
    (proj,) = [n for n in graph.nodes if n.target == "downsample"]
    (conv1,) = [n for n in graph.nodes if n.target == "conv1"]
    assert proj.args[0] is conv1.args[0] and proj.args[0].target == "relu"
    # An identity shortcut adds the raw input.
    graph = torch.fx.symbolic_trace(BasicUnit(4, 4)).graph
    (add,) = [n for n in graph.nodes if n.target is operator.add]
    assert add.args[0].op == "placeholder"


# --------------------------------------------------------------------------- Table 1 / Fig. 2
def _unit_with_constant_residual(c, **kw):
    """Original unit whose residual F(x) is the constant c: the last BN has scale 0, shift c."""
    unit = BasicUnit(3, 3, ordering="original", **kw).eval()
    with torch.no_grad():
        unit.bn2.weight.zero_()
        unit.bn2.bias.fill_(c)
    return unit


def _set_gate(unit, bias):
    with torch.no_grad():
        unit.gate.layer.weight.zero_()
        unit.gate.layer.bias.fill_(bias)


X = torch.tensor([[[[0.5, 1.0], [2.0, 4.0]]] * 3])  # (1, 3, 2, 2), positive


def test_constant_scaling_by_hand():
    unit = _unit_with_constant_residual(
        0.25, shortcut_type="constant_scaling", shortcut_scale=0.5, residual_scale=0.5
    )
    with torch.no_grad():
        assert torch.allclose(unit(X), torch.relu(0.5 * X + 0.5 * 0.25))


@pytest.mark.parametrize("bias", [0.0, -6.0, 2.0])
def test_exclusive_gating_by_hand(bias):
    unit = _unit_with_constant_residual(0.25, shortcut_type="exclusive_gating")
    _set_gate(unit, bias)
    g = torch.sigmoid(torch.tensor(bias))
    with torch.no_grad():
        assert torch.allclose(unit(X), torch.relu((1 - g) * X + g * 0.25))


def test_shortcut_only_gating_by_hand():
    unit = _unit_with_constant_residual(-0.25, shortcut_type="shortcut_only_gating")
    _set_gate(unit, 0.0)  # g = 0.5: the case that trains to 12.86% (Table 1)
    with torch.no_grad():
        assert torch.allclose(unit(X), torch.relu(0.5 * X - 0.25))


def test_dropout_shortcut():
    unit = _unit_with_constant_residual(0.0, shortcut_type="dropout_shortcut")
    with torch.no_grad():
        assert torch.allclose(unit(X), X)  # eval: the shortcut is the identity
        unit.train()
        big = X.repeat(64, 1, 1, 1)
        y = unit(big)
    dropped, kept = y == 0, torch.isclose(y, 2 * big)  # p = 0.5: mask, scaled by 1/(1 - p)
    assert (dropped | kept).all() and dropped.any() and kept.any()


def test_gate_bias_and_conv_shortcuts_in_the_network():
    m = create_model("resnet110_ablation", shortcut_type="exclusive_gating", gate_bias=-6.0)
    gates = [u for u in m.modules() if isinstance(u, SigmoidGate)]
    assert len(gates) == 54 and all((g.layer.bias == -6.0).all() for g in gates)
    m = _meta("resnet110_ablation", shortcut_type="conv_shortcut")
    units = [u for u in m.modules() if isinstance(u, BasicUnit)]
    assert all(isinstance(u.downsample, nn.Sequential) for u in units)  # 1x1 conv + BN everywhere
    assert not any(isinstance(u, ZeroPadShortcut) for u in m.modules())


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_table2_rows_from_the_ablation_entry(ordering):
    m = _meta("resnet110_ablation", ordering=ordering)
    assert {u.ordering for u in m.modules() if isinstance(u, BasicUnit)} == {ordering}
    # Units that end without an activation get one before pooling (BN-ReLU for full pre-act).
    assert ("final_act" in m.stage_names) == (ordering in ("relu_only_preact", "full_preact"))


def test_table1_rows_build():
    for kind, options, *_ in TABLE1_CIFAR10_ERROR:
        m = preact_cifar_resnet(depth=8, ordering="original", shortcut_type=kind, **options)
        assert m(torch.randn(1, 3, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(shortcut_type="exclusive_gating"), "ordering"),  # Table 1 modifies the original unit
        (dict(ordering="original", shortcut_type="constant_scaling", gate_bias=-6.0), "gate_bias"),
        (dict(ordering="original", shortcut_dropout=0.5), "shortcut_dropout"),
        (dict(ordering="sandwich"), "ordering"),
        (dict(block="wide"), "block"),
        (dict(shortcut="C"), "shortcut"),
    ],
)
def test_invalid_combinations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        preact_cifar_resnet(depth=20, **kwargs)


@pytest.mark.parametrize("depth,block", [(21, "basic"), (21, "bottleneck"), (2, "basic")])
def test_depth_must_fit_the_block(depth, block):
    with pytest.raises(ValueError, match="depth"):
        preact_cifar_resnet(depth=depth, block=block)


# --------------------------------------------------------------------------- the networks
def _weight_params(model):
    return sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
        for p in m.parameters()
    )


@pytest.mark.parametrize("name", ["preact_resnet110", "preact_resnet164", "preact_resnet1001"])
def test_cifar_depth_and_paper_params(name):
    m = _meta(name)
    ref = model_info(name).reference
    # Depth counts conv1, the convs of the residual branches and the fc (6n+2, 9n+2).
    branch = [c for n, c in m.named_modules() if isinstance(c, nn.Conv2d) and "downsample" not in n]
    assert len(branch) + 1 == int(name.removeprefix("preact_resnet"))
    # The paper's 1.7M / 1.7M / 10.2M round the weight layers (BN scales and shifts aside).
    assert round(_weight_params(m) / 1e5) == round(ref["paper_params"] / 1e5)


def test_cifar_bottleneck_layout_of_the_authors_code():
    m = _meta("preact_resnet164")
    first, second = m.layer1[0], m.layer2[0]
    assert [first.conv1.out_channels, first.conv3.out_channels] == [16, 64]
    assert second.conv1.stride == (2, 2) and second.conv2.stride == (1, 1)  # stride in the 1x1
    assert isinstance(first.downsample, nn.Conv2d) and not hasattr(first, "bn1")  # bn1 of the stem
    assert m.layer1[1].downsample is None and m.final_act.describe() == "BN, ReLU"


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("variant", ["paper", "v1.5"])
def test_imagenet_preact_costs_what_resnet_costs(depth, variant):
    # Same convs and fc as He et al. 2016a, only BN moves: equal multiply-adds.
    assert summarize(f"preact_resnet{depth}", variant=variant).macs == summarize(
        f"resnet{depth}", variant=variant
    ).macs


def test_imagenet_preact_layout():
    m = _meta("preact_resnet200")
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [3, 24, 36, 3]
    keys = m.state_dict().keys()
    assert {"conv1.weight", "bn1.weight", "layer4.2.conv3.weight", "final_act.bn.weight"} <= keys
    v15 = _meta("preact_resnet50", variant="v1.5")
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)


@pytest.mark.parametrize("name", ["wrn_16_4", "wrn_16_8", "wrn_28_10", "wrn_40_4"])
def test_wrn_counts_and_depth(name):
    m = _meta(name)
    ref = model_info(name).reference
    assert round(count_params(m) / 1e5) == round(ref["paper_params"] / 1e5)
    depth, k = map(int, name.split("_")[1:])
    # WRN depth counts every conv, the three 1x1 projections included (6n+4).
    assert sum(isinstance(c, nn.Conv2d) for c in m.modules()) == depth
    assert [m.layer1[0].conv2.out_channels, m.layer3[-1].conv2.out_channels] == [16 * k, 64 * k]


def test_wrn_dropout_and_validation():
    m = wide_resnet(depth=10, widen_factor=2, dropout=0.3)
    drops = [d for d in m.modules() if isinstance(d, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.3 for d in drops)
    plain = wide_resnet(depth=10, widen_factor=2)
    assert not any(isinstance(d, nn.Dropout) for d in plain.modules())
    for kwargs, match in [
        (dict(depth=27, widen_factor=2), "6n\\+4"),
        (dict(depth=16, widen_factor=0), "widen_factor"),
        (dict(depth=16, widen_factor=2, dropout=1.0), "dropout"),
    ]:
        with pytest.raises(ValueError, match=match):
            wide_resnet(**kwargs)


# --------------------------------------------------------------------------- highway
@pytest.mark.parametrize("kernel_size,shape", [(None, (5, 6)), (3, (2, 6, 5, 5))])
def test_highway_gate_extremes(kernel_size, shape):
    layer = HighwayLayer(6, kernel_size=kernel_size)
    x = torch.randn(*shape)
    with torch.no_grad():
        layer.t.layer.weight.zero_()
        layer.t.layer.bias.fill_(-1e4)  # T = 0: carry everything
        assert torch.equal(layer(x), x)
        layer.t.layer.bias.fill_(1e4)  # T = 1: transform everything
        assert torch.allclose(layer(x), layer.h(x))
        assert torch.allclose(layer.h(x), torch.relu(layer.h.layer(x)))


def test_highway_separate_carry_gate():
    layer = HighwayLayer(4, carry_gate=True, gate_bias=-3.0)
    assert layer.c.layer.bias.eq(3.0).all()  # b_C defaults to -b_T
    x = torch.randn(3, 4)
    with torch.no_grad():
        for gate in (layer.t, layer.c):
            gate.layer.weight.zero_()
            gate.layer.bias.fill_(1e4)
        assert torch.allclose(layer(x), layer.h(x) + x)  # T = C = 1


def test_highway_cifar_structure():
    m = _meta("highway_cifar")
    assert round(count_params(m) / 1e5) == 23  # Table 1: 2.3M
    # 19 weight layers: plain convs, highway blocks (H with its gate T) and the fc.
    highway = sum(isinstance(c, HighwayLayer) for c in m.modules())
    plain = sum(isinstance(c, PlainLayer) for c in m.modules()) - highway  # H is a PlainLayer too
    assert (highway, plain) == (14, 4)
    assert highway + plain + 1 == model_info("highway_cifar").reference["layers"]
    gates = [g for g in m.modules() if isinstance(g, SigmoidGate)]
    assert len(gates) == 14 and all(g.layer.kernel_size == (3, 3) for g in gates)
    drops = [d for d in m.modules() if isinstance(d, nn.Dropout)]
    assert len(drops) == 4 and all(d.p == 0.2 for d in drops)
    m = create_model("highway_cifar", gate_bias=-1.5, dropout=0.0)
    assert all(g.layer.bias.eq(-1.5).all() for g in m.modules() if isinstance(g, SigmoidGate))
    assert not any(isinstance(d, nn.Dropout) for d in m.modules())


def test_highway_fc_params_per_layer():
    m = highway_fc(depth=10)
    assert len(m.layers.highways) == 9 and m.layers.plain.layer.in_features == 784
    per_layer = count_params(m.layers.highways[0])
    plain = count_params(PlainLayer(nn.Linear(71, 71)))  # a layer of the plain nets (Sec. 3.1)
    target = model_info("highway_fc_mnist").reference["params_per_layer"]
    assert abs(per_layer - target) / target < 0.03 and abs(plain - target) / target < 0.03
    with pytest.raises(ValueError, match="activation"):
        highway_fc(activation="maxout")
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# --------------------------------------------------------------------------- summaries
@pytest.mark.parametrize(
    "name,row",
    [
        ("preact_resnet164", "[1x1, 64; 3x3, 64; 1x1, 256] x 18"),
        ("wrn_28_10", "[3x3, 640; 3x3, 640] x 4"),
        ("highway_cifar", "[3x3, 128; highway 3x3, 128 x 5]"),
        ("highway_fc_mnist", "[fc, 50; highway fc, 50 x 49]"),
        ("resnet164_ablation", "[1x1, 16; 3x3, 16; 1x1, 64] x 18"),
    ],
)
def test_summary_rows(name, row):
    text = format_summary(summarize(name))
    assert row in text and f"{count_params(_meta(name)):,}" in text
