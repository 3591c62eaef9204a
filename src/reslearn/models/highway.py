"""Highway networks: Srivastava, Greff & Schmidhuber, "Highway Networks" (ICML 2015 Deep Learning
Workshop, arXiv:1505.00387) and "Training Very Deep Networks" (NIPS 2015, arXiv:1507.06228).

A highway layer computes y = H(x) * T(x) + x * C(x) (Eq. 2) with the transform gate
T(x) = sigmoid(W_T x + b_T) and, as in the papers' experiments, the carry gate C = 1 - T (Eq. 3);
``carry_gate=True`` gives C its own weights instead. A negative b_T biases every layer towards
carrying its input at the start of training (Sec. 2.2 suggests values such as -1 or -3); the
authors' released nets use -1 (10-layer MNIST) and -2 (19-layer CIFAR-10), and -2 is the
default here for every depth (pass ``gate_bias`` to change it).

* ``highway_fc``: the fully-connected nets of Sec. 3.1 / Fig. 1: a plain fc layer, then
  depth - 1 highway layers of ``width`` blocks (50 in the paper) and a softmax layer.
* ``highway_cifar``: the 19-layer convolutional net of Table 1 ("Highway B", 2.3M parameters,
  92.28 +- 0.16% CIFAR-10 accuracy), laid out as the authors' Caffe definition
  (github.com/flukeskywalker/highway-networks, ``cifar10-19layers``): conv 3x3 32, 4 highway
  3x3 32, max pool; conv 3x3 80, 5 highway 3x3 80, max pool; conv 3x3 128, 5 highway 3x3 128;
  conv 1x1 100, 8x8 average pool, fc. H is conv + ReLU, T a conv of the same size; dropout 0.2
  on the input, after each max pool and before the fc. That file's fc has 100 outputs for 10
  classes (copied from its CIFAR-100 twin); the fc here has ``num_classes`` outputs, giving
  2,256,838 parameters (2.3M).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers import Describable, SigmoidGate
from ..registry import register_model
from .base import ClassifierModel, check_choice, check_num_classes, check_positive

__all__ = [
    "ACTIVATIONS",
    "CIFAR_STAGES",
    "PlainLayer",
    "HighwayLayer",
    "HighwayStage",
    "HighwayMLP",
    "HighwayConvNet",
    "highway_fc",
    "highway_cifar",
    "highway_init",
]

PAPER = (
    "Srivastava, Greff & Schmidhuber, Training Very Deep Networks, NIPS 2015 (arXiv:1507.06228); "
    "Highway Networks (arXiv:1505.00387)"
)

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}

# highway_cifar: (width, highway layers) per stage, a max pool between stages; then a 1x1 conv.
CIFAR_STAGES: tuple[tuple[int, int], ...] = ((32, 4), (80, 5), (128, 5))
CIFAR_HEAD_WIDTH = 100


def _weight_layer(in_f: int, out_f: int, kernel_size: int | None) -> nn.Linear | nn.Conv2d:
    """Fully connected when ``kernel_size`` is None, else a convolution keeping the map size
    ("zero-padding to ensure that the block state and transform gate feature maps match the
    input size", Sec. 2.1)."""
    if kernel_size is None:
        return nn.Linear(in_f, out_f)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive; got {kernel_size!r}")
    return nn.Conv2d(in_f, out_f, kernel_size, padding=kernel_size // 2)


def _spec(layer: nn.Module) -> str:
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size
        return f"{k[0]}x{k[1]}, {layer.out_channels}"
    return f"fc, {layer.out_features}"


class PlainLayer(nn.Module, Describable):
    """A plain layer y = H(x, W_H) (Eq. 1): affine transform then the nonlinearity."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, activation: str = "relu") -> None:
        super().__init__()
        self.layer = layer
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.layer(x))

    def describe(self) -> str:
        return _spec(self.layer)


class HighwayLayer(nn.Module, Describable):
    """y = H(x) * T(x) + x * C(x) with C = 1 - T (Eq. 3) or, ``carry_gate=True``, its own gate.

    Args:
        features: width of x and y (a highway layer keeps the dimensionality).
        kernel_size: ``None`` for a fully-connected layer, else the convolution size of H and T.
        activation: nonlinearity of H, ``"relu"`` or ``"tanh"`` (the papers search over both).
        gate_bias: initial b_T.
        carry_gate: give C(x) = sigmoid(W_C x + b_C) its own parameters (Eq. 2).
        carry_bias: initial b_C (default ``-gate_bias``, so that T + C starts near 1).
    """

    def __init__(
        self,
        features: int,
        *,
        kernel_size: int | None = None,
        activation: str = "relu",
        gate_bias: float = -2.0,
        carry_gate: bool = False,
        carry_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.h = PlainLayer(_weight_layer(features, features, kernel_size), activation)
        self.t = SigmoidGate(_weight_layer(features, features, kernel_size), gate_bias)
        self.c = (
            SigmoidGate(
                _weight_layer(features, features, kernel_size),
                -gate_bias if carry_bias is None else carry_bias,
            )
            if carry_gate
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.t(x)
        c = 1 - t if self.c is None else self.c(x)
        return self.h(x) * t + x * c

    def describe(self) -> str:
        return f"highway {_spec(self.h.layer)}"


class HighwayStage(nn.Module, Describable):
    """Dropout, a plain layer that sets the width, then ``depth`` highway layers of that width.

    A highway layer cannot change the dimensionality of x; the papers change it with plain
    layers (Sec. 2.1), as here."""

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        *,
        kernel_size: int | None = None,
        plain_kernel_size: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        gate_bias: float = -2.0,
        carry_gate: bool = False,
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.plain = PlainLayer(
            _weight_layer(in_features, width, plain_kernel_size or kernel_size), activation
        )
        self.highways = nn.Sequential(
            *(
                HighwayLayer(
                    width,
                    kernel_size=kernel_size,
                    activation=activation,
                    gate_bias=gate_bias,
                    carry_gate=carry_gate,
                )
                for _ in range(depth)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.highways(self.plain(self.drop(x)))

    def describe(self) -> list[str]:
        rows = [self.plain.describe()]
        if len(self.highways):
            rows.append(f"{self.highways[0].describe()} x {len(self.highways)}")
        return rows


def highway_init(model: nn.Module) -> None:
    """Weights uniform in +-sqrt(3 / fan_in) (Caffe's "xavier", as the authors' nets), biases 0,
    then every gate bias to its initial value."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            bound = math.sqrt(3.0 / fan_in)
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, SigmoidGate):
            m.reset_bias()


def _check(activation: str, gate_bias: float, dropout: float) -> None:
    check_choice("activation", activation, tuple(ACTIVATIONS))
    if not isinstance(gate_bias, (int, float)) or isinstance(gate_bias, bool):
        raise ValueError(f"gate_bias must be a number; got {gate_bias!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")


class HighwayMLP(ClassifierModel):
    """Fully-connected highway net (Sec. 3.1): plain fc, ``depth - 1`` highway layers, fc.

    Inputs of any shape are flattened (MNIST: 1x28x28 -> 784).
    """

    stage_names = ("layers", "fc")

    def __init__(
        self,
        *,
        in_features: int = 784,
        width: int = 50,
        depth: int = 10,
        num_classes: int = 10,
        activation: str = "relu",
        gate_bias: float = -2.0,
        carry_gate: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        check_positive("in_features", in_features)
        check_positive("width", width)
        check_positive("depth", depth)
        _check(activation, gate_bias, 0.0)
        self.depth = depth
        self.layers = HighwayStage(
            in_features,
            width,
            depth - 1,
            activation=activation,
            gate_bias=gate_bias,
            carry_gate=carry_gate,
        )
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)
        highway_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.flatten(x, 1))


class HighwayConvNet(ClassifierModel):
    """Convolutional highway net: stages of ``HighwayStage`` (3x3) with 2x2 max pools between,
    a 1x1 plain conv, global average pooling, dropout and fc (the layout of ``highway_cifar``).
    """

    def __init__(
        self,
        stages: tuple[tuple[int, int], ...] = CIFAR_STAGES,
        *,
        head_width: int = CIFAR_HEAD_WIDTH,
        num_classes: int = 10,
        in_chans: int = 3,
        dropout: float = 0.2,
        gate_bias: float = -2.0,
        carry_gate: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        check_positive("in_chans", in_chans)
        check_positive("head_width", head_width)
        _check("relu", gate_bias, dropout)
        names: list[str] = []
        ch = in_chans
        for i, (width, depth) in enumerate(stages, start=1):
            if i > 1:
                names.append(f"pool{i - 1}")
                self.add_module(names[-1], nn.MaxPool2d(2, stride=2))
            names.append(f"stage{i}")
            self.add_module(
                names[-1],
                HighwayStage(
                    ch,
                    width,
                    depth,
                    kernel_size=3,
                    dropout=dropout,
                    gate_bias=gate_bias,
                    carry_gate=carry_gate,
                ),
            )
            ch = width
        self.head_conv = PlainLayer(_weight_layer(ch, head_width, 1))
        self._body = tuple(names)
        self.stage_names = (*names, "head_conv", "fc")
        self.head_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_features = head_width
        self.fc = nn.Linear(head_width, num_classes)
        highway_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._body:
            x = getattr(self, name)(x)
        return self.head_conv(x)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(super().forward_head(x, pre_logits=True))
        return x if pre_logits else self.fc(x)


def highway_fc(
    *,
    depth: int = 10,
    width: int = 50,
    in_features: int = 784,
    num_classes: int = 10,
    activation: str = "relu",
    gate_bias: float = -2.0,
    carry_gate: bool = False,
) -> HighwayMLP:
    """Fully-connected highway net of ``depth`` layers (Sec. 3.1, Fig. 1: depths 10, 20, 50 and
    100, 50 blocks per layer, MNIST and CIFAR-100)."""
    return HighwayMLP(
        in_features=in_features,
        width=width,
        depth=depth,
        num_classes=num_classes,
        activation=activation,
        gate_bias=gate_bias,
        carry_gate=carry_gate,
    )


def highway_cifar(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    dropout: float = 0.2,
    gate_bias: float = -2.0,
    carry_gate: bool = False,
) -> HighwayConvNet:
    """The 19-layer convolutional highway net for CIFAR-10 (Table 1, "Highway B")."""
    return HighwayConvNet(
        CIFAR_STAGES,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
        gate_bias=gate_bias,
        carry_gate=carry_gate,
    )


register_model(
    "highway_fc_mnist",
    family="highway",
    paper=PAPER + ", Sec. 3.1",
    input_size=(1, 28, 28),
    num_classes=10,
    # Sec. 3.1 / Fig. 1: 50 blocks per highway layer and 71 units per plain layer, both about
    # 5000 parameters per layer.
    reference={"params_per_layer": 5000, "plain_width": 71},
    depth=50,
)(highway_fc)

register_model(
    "highway_cifar",
    family="highway",
    paper=PAPER + ", Table 1",
    input_size=(3, 32, 32),
    num_classes=10,
    # Table 1: 19 layers, 2.3M parameters, 92.46% best and 92.28 +- 0.16% mean accuracy.
    reference={
        "params": 2_256_838,
        "paper_params": 2.3e6,
        "layers": 19,
        "cifar10_accuracy": 92.28,
        "cifar10_accuracy_std": 0.16,
        "cifar10_accuracy_best": 92.46,
    },
    test_input_size=(3, 16, 16),
)(highway_cifar)
