"""Layer responses (He et al. 2016, Sec. 4.2, Fig. 7): "the standard deviations (std) of layer
responses ... The responses are the outputs of each 3x3 layer, after BN and before other
nonlinearity (ReLU/addition)". ResNets respond less than their plain twins: residual functions
are closer to zero than non-residual ones.

For every BatchNorm2d that follows a 3x3 convolution we record, over a data set, the standard
deviation of all its output values (all channels and positions together), with running sums in
float64. Layer order is the forward order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["response_layers", "layer_response_std", "plot_responses"]


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BN layers that directly follow a 3x3 conv, in forward (registration) order."""
    out, prev = [], None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            prev = m
        elif isinstance(m, nn.BatchNorm2d) and prev is not None:
            if prev.kernel_size == (3, 3) and prev.out_channels == m.num_features:
                out.append((name, m))
            prev = None
    return out


@torch.no_grad()
def layer_response_std(model: nn.Module, batches) -> list[tuple[str, float]]:
    layers = response_layers(model)
    sums = {n: torch.zeros(3, dtype=torch.float64) for n, _ in layers}

    def hook(name):
        def f(_m, _i, out):
            o = out.detach().double()
            sums[name] += torch.stack([o.sum(), (o * o).sum(), torch.tensor(float(o.numel()), dtype=torch.float64)]).cpu()
        return f

    hs = [m.register_forward_hook(hook(n)) for n, m in layers]
    model.eval()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for h in hs:
            h.remove()
    res = []
    for n, _ in layers:
        s, ss, k = sums[n].tolist()
        mean = s / max(k, 1)
        res.append((n, max(ss / max(k, 1) - mean * mean, 0.0) ** 0.5))
    return res


def plot_responses(curves: dict[str, Sequence[float]], out: str | Path) -> Path:
    """Fig. 7 style: std by layer index (top) and sorted by magnitude (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(6.4, 5.2), dpi=120)
    for label, stds in curves.items():
        a.plot(range(1, len(stds) + 1), stds, lw=1.4, label=label)
        b.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), lw=1.4, label=label)
    a.set_xlabel("layer index (original)")
    b.set_xlabel("layer index (sorted by magnitude)")
    for ax in (a, b):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("std of 3x3 layer responses (after BN, before ReLU/addition), He et al. Fig. 7", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def analyze_responses(paths: Sequence[str | Path], *, root: str | None = None, limit: int = 0,
                      out: str | Path = "responses.png", device: str = "cpu") -> dict[str, Any]:
    """Response stds of each checkpoint's model over its test set; writes the Fig. 7 plot."""
    from .checkpoint import load_model
    from .engine.data import IN_MEMORY
    from .engine.evaluate import checkpoint_data_config, eval_source, eval_split
    from .errors import ReslearnError

    curves, table = {}, {}
    for p in paths:
        model, doc = load_model(p, device=device)
        cfg = checkpoint_data_config(doc, root=root, dataset=None)
        if cfg.name not in IN_MEMORY:
            raise ReslearnError("response analysis reads in-memory data sets (CIFAR, MNIST-like)")
        _, test = eval_split(doc, split="test", root=root, limit=limit)
        src = eval_source(doc, test, device=device)
        res = layer_response_std(model, src.iter_epoch(0))
        label = doc["model"] if doc["model"] not in curves else f"{doc['model']} ({Path(p).parent.name})"
        curves[label] = [s for _, s in res]
        table[label] = res
    png = plot_responses(curves, out)
    return {"png": str(png), "layers": table}
