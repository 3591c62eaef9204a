"""reslearn: deep residual learning in PyTorch, exact to the papers."""

from .registry import create_model, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "model_info", "register_model"]
