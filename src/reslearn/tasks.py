"""What the engine trains: a *task* turns a model and a batch into a loss, and a model and a
batch source into evaluation metrics. Classification is the default; speech (CTC), regression
(age) and others plug in their own without touching the training loop."""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.source import BatchSource

__all__ = ["Task", "ClassificationTask"]


@runtime_checkable
class Task(Protocol):
    """``loss`` returns the scalar training loss and a dict of *sums* over the batch (e.g.
    ``{"top1_err": wrong, "n": batch_size}``) that the engine averages for logging; ``evaluate``
    returns final metrics (``{"loss": ..., "top1_err": ... (percent)}``). ``primary`` names the
    metric that picks the best checkpoint (lower is better).

    The hooks the engine reads are declared here with their defaults; a task that subclasses
    ``Task`` inherits them and overrides what it needs."""

    primary: str

    @property
    def train_error_keys(self) -> tuple[str, str]:
        """The pair of ``loss`` sums whose ratio is the logged training error (``train_err``):
        by default the primary metric's count over the samples; CTC names word errors over
        reference words."""
        return (self.primary, "n")

    def loss(self, model: nn.Module, batch: tuple[Any, Any]) -> tuple[torch.Tensor, dict[str, float]]: ...

    def evaluate(self, model: nn.Module, source: BatchSource) -> dict[str, float]: ...


def topk_wrong(logits: torch.Tensor, target: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[-1])
    hit = logits.topk(k, dim=-1).indices.eq(target.unsqueeze(-1)).any(-1)
    return int((~hit).sum())


class ClassificationTask(Task):
    """Softmax cross-entropy; top-1 and top-5 error in percent (He et al. report both).

    ``label_smoothing`` smooths the training targets only (Szegedy et al. 2016, Sec. 7; the
    evaluation loss stays the plain cross-entropy, comparable across runs). ``eval_flip``
    evaluates each image and its horizontal mirror and averages the two softmax outputs."""

    primary = "top1_err"
    label_smoothing, eval_flip = 0.0, False  # class defaults: subclasses need not call __init__

    def __init__(self, *, label_smoothing: float = 0.0, eval_flip: bool = False) -> None:
        self.label_smoothing, self.eval_flip = label_smoothing, eval_flip

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            wrong = int((logits.argmax(-1) != y).sum())
        return loss, {"top1_err": wrong, "n": len(y)}

    def log_probs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Log-softmax of the model's output; with ``eval_flip`` the log of the mean softmax of
        ``x`` and its mirror (the last axis is the width), via logsumexp for stability."""
        logp = F.log_softmax(model(x).float(), -1)
        if not self.eval_flip:
            return logp
        mirror = F.log_softmax(model(x.flip(-1)).float(), -1)
        return torch.logaddexp(logp, mirror) - math.log(2.0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, source: BatchSource) -> dict[str, float]:
        tot_loss, w1, w5, n = 0.0, 0, 0, 0
        for x, y in source.iter_epoch(0):
            logp = self.log_probs(model, x)
            tot_loss += float(F.nll_loss(logp, y, reduction="sum"))
            w1 += topk_wrong(logp, y, 1)
            w5 += topk_wrong(logp, y, 5)
            n += len(y)
        n = max(n, 1)
        return {"loss": tot_loss / n, "top1_err": 100.0 * w1 / n, "top5_err": 100.0 * w5 / n, "n": n}
