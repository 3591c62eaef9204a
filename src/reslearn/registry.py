"""One registry for every network in reslearn.

Builders register themselves with :func:`register_model`; users call :func:`create_model` and
:func:`list_models`. Each entry records the paper it comes from and the input it expects, so the
registry can drive tests, summaries and ``torch.hub`` without any per-model special cases.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one named model."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    paper: str
    input_size: tuple[int, int, int]  # (C, H, W) the paper uses
    num_classes: int
    # Figures the paper states, for tests and the README (e.g. {"params": 25_557_032}).
    reference: dict[str, Any] = field(default_factory=dict)
    # Tiny-input size used by wiring tests where the paper size would be slow on a CPU.
    test_input_size: tuple[int, int, int] | None = None
    # "classification": forward gives (B, num_classes). "sequence": (B, T, num_classes), e.g. CTC.
    # "regression": (B, num_classes) real values. Tests and the engine read this.
    task: str = "classification"
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    paper: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    reference: dict[str, Any] | None = None,
    test_input_size: tuple[int, int, int] | None = None,
    task: str = "classification",
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder`` under ``name``; ``defaults`` are keyword arguments bound at creation.

    Usable as a decorator, or called with a builder to register one generic builder under several
    names (``register_model("resnet20", ..., depth=20)(cifar_resnet)``).
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            family=family,
            paper=paper,
            input_size=tuple(input_size),  # type: ignore[arg-type]
            num_classes=num_classes,
            reference=dict(reference or {}),
            test_input_size=tuple(test_input_size) if test_input_size else None,  # type: ignore[arg-type]
            task=task,
            defaults=dict(defaults),
        )
        return builder

    return wrap


def _ensure_loaded() -> None:
    # Importing the models package runs every family's registrations.
    from . import models  # noqa: F401


def list_models(pattern: str | None = None, *, family: str | None = None) -> list[str]:
    """Registered model names in registration order, optionally filtered by a glob ``pattern``."""
    _ensure_loaded()
    names = [
        n for n, info in _REGISTRY.items() if family is None or info.family == family
    ]
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; unknown names raise ``ValueError`` with a suggestion."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown model name {name!r}{hint} (see `reslearn models` for all {len(_REGISTRY)})"
        ) from None


def create_model(name: str, *, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override the builder's keyword arguments.

    ``pretrained=True`` loads the model's default weights from reslearn's own reproduced runs
    (``pretrained="TAG"`` one entry by its tag; :mod:`reslearn.weights`, local files checked by
    SHA-256, nothing downloaded); the model then carries ``pretrained_cfg`` with its classes and
    input normaliser. Unknown keyword arguments raise ``ValueError`` naming the argument and the
    accepted ones.
    """
    info = model_info(name)
    if pretrained:
        from .weights import load_pretrained

        return load_pretrained(name, None if pretrained is True else str(pretrained), kwargs)
    params = inspect.signature(info.builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_any:
        allowed = [k for k in params if k not in info.defaults]
        for key in kwargs:
            if key not in params or key in info.defaults:
                raise ValueError(
                    f"{name}: unknown argument {key!r}; allowed: {', '.join(sorted(allowed))}"
                )
    model = info.builder(**{**info.defaults, **kwargs})
    # Every model knows its registry name (used by checkpoints and summaries).
    model.model_name = name  # type: ignore[assignment]
    return model
