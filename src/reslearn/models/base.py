"""The interface every reslearn classifier shares (after timm's): ``forward_features`` gives the
last feature map, ``forward_head`` pools and classifies, ``num_features`` is the width the head
sees, ``reset_classifier`` swaps the head for a new number of classes."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ClassifierModel", "check_num_classes", "check_choice", "check_positive"]


def check_num_classes(num_classes: int) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_choice(name: str, value: object, allowed: tuple) -> object:
    if value not in allowed:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}"
        )
    return value


class ClassifierModel(nn.Module):
    """Base class: subclasses set ``num_features`` and ``fc`` and implement ``forward_features``.

    The default head is global average pooling then the linear layer ``fc`` (He et al. 2016,
    Table 1: "average pool, 1000-d fc, softmax"; the softmax lives in the loss).
    """

    num_features: int
    num_classes: int
    # Names of the child modules that form the stages of the paper's layer table, in order.
    stage_names: tuple[str, ...] = ()
    # Hooks the engine and its tasks read, with their defaults; a model overrides what it needs.
    # ``forward(x, lengths)`` takes each row's valid frames (sequence models: WRBN's BLSTMs).
    takes_lengths: bool = False
    # Some parameters get no gradient in some batches, so DistributedDataParallel must look for
    # them each step (the age/gender net: a shard of one gender leaves the other age net idle).
    ddp_find_unused_parameters: bool = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        if x.dim() == 4:
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` classes."""
        self.num_classes = check_num_classes(num_classes)
        old = self.fc
        device = old.weight.device if isinstance(old, nn.Linear) else None
        self.fc = nn.Linear(self.num_features, num_classes, device=device)
