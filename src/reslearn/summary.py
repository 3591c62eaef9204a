"""Paper-style layer tables, parameter counts and multiply-adds.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per
multiply-add of convolutions and matrix products; the papers' "FLOPs" (He et al. 2016, Table 1)
are multiply-adds, so we report FLOPs / 2. Like the paper, this leaves out BN, ReLU, additions
and pooling. Models are built on the ``meta`` device, so even ResNet-1202 costs no memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .layers import describe_module
from .registry import create_model, model_info

__all__ = ["StageRow", "ModelSummary", "summarize", "count_params", "count_macs", "format_summary"]


@dataclass
class StageRow:
    name: str
    output_size: list[int]  # (C, H, W) or (features,)
    spec: str
    params: int
    macs: int


@dataclass
class ModelSummary:
    model: str
    family: str
    paper: str
    input_size: list[int]
    params: int
    macs: int
    stages: list[StageRow] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on a single input of ``input_size`` (C, H, W)."""
    device = next(iter(model.parameters())).device
    x = torch.zeros(1, *input_size, device=device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def _build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def summarize(
    name: str, *, input_size: tuple[int, int] | None = None, **kwargs: Any
) -> ModelSummary:
    """Layer table of the registered model ``name`` for an input of ``input_size`` (H, W)."""
    info = model_info(name)
    model = _build(name, kwargs)
    chans = kwargs.get("in_chans", info.input_size[0])
    hw = tuple(input_size) if input_size else info.input_size[1:]
    if len(hw) != 2 or any(int(v) < 1 for v in hw):
        raise ValueError(f"input_size must be two positive integers H W; got {input_size!r}")
    size = (chans, *(int(v) for v in hw))
    shapes: dict[str, list[int]] = {}
    hooks = []
    stage_names = getattr(model, "stage_names", ())
    for stage in stage_names:
        module = model.get_submodule(stage)

        def hook(_m, _inp, out, stage=stage):
            shapes[stage] = list(out.shape[1:])

        hooks.append(module.register_forward_hook(hook))
    x = torch.zeros(1, *size, device="meta")
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    rows = []
    for stage in stage_names:
        module = model.get_submodule(stage)
        flops = sum(per_module.get(f"{root}.{stage}", {}).values())
        rows.append(
            StageRow(
                name=stage,
                output_size=shapes.get(stage, []),
                spec=describe_module(module),
                params=count_params(module),
                macs=int(flops // 2),
            )
        )
    return ModelSummary(
        model=name,
        family=info.family,
        paper=info.paper,
        input_size=list(size),
        params=count_params(model),
        macs=int(counter.get_total_flops() // 2),
        stages=rows,
        kwargs=dict(kwargs),
    )


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def format_summary(s: ModelSummary) -> str:
    """The layer table as aligned text."""
    head = ("stage", "output size", "blocks", "params", "mult-adds")
    body = [
        (
            r.name,
            "x".join(map(str, r.output_size)),
            r.spec,
            f"{r.params:,}",
            human(r.macs),
        )
        for r in s.stages
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [
        f"{s.model}  ({s.paper})",
        f"input {'x'.join(map(str, s.input_size))}"
        + (f"  options {s.kwargs}" if s.kwargs else ""),
        "",
        fmt.format(*head),
        fmt.format(*("-" * w for w in widths)),
        *(fmt.format(*row) for row in body),
        "",
        f"total params     {s.params:,}",
        f"total mult-adds  {s.macs:,}  ({human(s.macs)}; FLOPs as the papers count them)",
    ]
    return "\n".join(lines)
