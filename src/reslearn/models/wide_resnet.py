"""Wide Residual Networks: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016
(arXiv:1605.07146).

WRN-d-k (Table 1): conv1 3x3 with 16 filters, then three groups of N = (d - 4) / 6 blocks
B(3,3) of widths 16k, 32k and 64k on 32x32, 16x16 and 8x8 maps, BN-ReLU, 8x8 average pooling,
fc. B(3,3) is the full pre-activation basic unit of He et al. 2016b (``BasicUnit``), with a
1x1-conv projection where width or stride changes and optional dropout between its two convs
(Sec. 2.4, Fig. 1d). The network is therefore a ``PreActResNet`` with wider stages.
"""

from __future__ import annotations

from ..layers import BasicUnit
from ..registry import register_model
from .base import check_positive
from .preact_resnet import PreActResNet, units_per_stage

__all__ = ["WideResNet", "wide_resnet"]

PAPER = "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016 (arXiv:1605.07146)"


class WideResNet(PreActResNet):
    """WRN-(6n+4)-k (Table 1).

    Args:
        n: blocks per group (depth 6n+4).
        widen_factor: k; groups are 16k, 32k and 64k wide.
        dropout: dropout probability between the two convs of each block (0 by default; the
            paper's dropout rows use 0.3).
        num_classes: classes of the final fc (10 for CIFAR-10).
        in_chans: input channels.
    """

    def __init__(
        self,
        n: int,
        widen_factor: int,
        *,
        dropout: float = 0.0,
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        check_positive("n", n)
        check_positive("widen_factor", widen_factor)
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        k = widen_factor
        super().__init__(
            BasicUnit,
            (n, n, n),
            widths=(16 * k, 32 * k, 64 * k),
            stem="cifar",
            stem_width=16,
            num_classes=num_classes,
            in_chans=in_chans,
            shortcut="B",
            dropout=float(dropout),
        )
        self.depth, self.widen_factor, self.dropout = 6 * n + 4, k, float(dropout)


def wide_resnet(
    *,
    depth: int,
    widen_factor: int,
    dropout: float = 0.0,
    num_classes: int = 10,
    in_chans: int = 3,
) -> WideResNet:
    """WRN-``depth``-``widen_factor``; ``depth`` must be 6n+4 (10, 16, 22, 28, 40, ...)."""
    n = units_per_stage(depth, layers_per_unit=2, extra=4)
    return WideResNet(
        n, widen_factor, dropout=dropout, num_classes=num_classes, in_chans=in_chans
    )


# (depth, k): exact parameter count (bias-free convs, fc with bias), the paper's rounded count
# and its CIFAR-10 test error (%, Tables 5-6: meanstd preprocessing, median of 5 runs).
_WRNS: dict[tuple[int, int], tuple[int, float | None, float | None]] = {
    (16, 4): (2_748_890, 2.7e6, 5.02),
    (16, 8): (10_961_370, 11.0e6, 4.27),
    (28, 10): (36_479_194, 36.5e6, 4.00),
    (40, 4): (8_949_210, 8.9e6, 4.53),
    (40, 10): (55_841_754, None, None),
}
# Extra figures: WRN-28-10 on CIFAR-100 and with dropout 0.3 (Table 5); WRN-40-10 with dropout
# 0.3 (single runs, the authors' README; the paper's tables do not list it).
_EXTRA = {
    (28, 10): {"cifar100_error": 19.25, "dropout_0.3_error": {"cifar10": 3.89, "cifar100": 18.85}},
    (40, 10): {"dropout_0.3_error_single_run": {"cifar10": 3.8, "cifar100": 18.3}},
}

for (_d, _k), (_params, _paper, _err) in _WRNS.items():
    register_model(
        f"wrn_{_d}_{_k}",
        family="wide_resnet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        reference={
            "params": _params,
            **({"paper_params": _paper, "cifar10_error": _err} if _paper else {}),
            **_EXTRA.get((_d, _k), {}),
        },
        test_input_size=(3, 8, 8),
        depth=_d,
        widen_factor=_k,
    )(wide_resnet)
