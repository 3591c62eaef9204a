"""Checkpoints as safetensors: no pickle anywhere, so loading one cannot run code.

Two kinds of file, both a single ``.safetensors`` with a JSON document in its metadata:
- a *training checkpoint*: model weights (``model.*``), optimizer tensors (``optim.*``), RNG
  states (``rng.*``) and, in JSON, the iteration, the position in the data order, scheduler state,
  optimizer hyper-parameters and the resolved config;
- a *weights file*: the model's state_dict under its own keys (loadable with
  ``safetensors.torch.load_file`` + ``load_state_dict``).
Both carry in the JSON what is needed to rebuild and use the model: registry name, builder
arguments, classes, input size and the input normaliser's statistics.

Files are written atomically (temporary file in the same folder, fsync, rename, fsync of the
folder), and carry a SHA-256 of their tensors so corruption is detected, not trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import ReslearnError

__all__ = [
    "atomic_write_bytes",
    "save_tensors",
    "load_tensors",
    "flatten_optimizer",
    "unflatten_optimizer",
    "load_model",
    "tensors_to_json",
    "tensors_from_json",
]

FORMAT = "reslearn"
VERSION = 1


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - e.g. file systems without directory fsync
        pass


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically save ``tensors`` (moved to CPU, made contiguous) with JSON ``meta``."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    doc = {"format": FORMAT, "version": VERSION, **meta, "sha256": _digest(cpu)}
    atomic_write_bytes(path, st_save(cpu, metadata={FORMAT: json.dumps(doc)}))


def load_tensors(path: str | Path, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a reslearn safetensors file; truncated or corrupted files raise ``ReslearnError``."""
    path = Path(path)
    if not path.is_file():
        raise ReslearnError(f"checkpoint {path} not found")
    raw = path.read_bytes()
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReslearnError(f"checkpoint {path} is truncated or corrupted ({e})") from None
    doc_raw = (header.get("__metadata__") or {}).get(FORMAT)
    if doc_raw is None:
        # A plain safetensors state_dict (not written by reslearn): weights only, no metadata.
        return tensors, {}
    doc = json.loads(doc_raw)
    if verify and doc.get("sha256") and _digest(tensors) != doc["sha256"]:
        raise ReslearnError(f"checkpoint {path} is corrupted (tensor checksum mismatch)")
    return tensors, doc


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict -> (tensors ``optim.<param>.<name>``, JSON-able rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{name}"] = val
            else:
                scalars[f"{pid}.{name}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    for key, val in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    return {"state": state, "param_groups": meta["param_groups"]}


def load_model(path: str | Path, *, device: str | torch.device = "cpu"):
    """Rebuild the model stored in a reslearn weights file or training checkpoint.

    Returns ``(model, doc)`` where ``doc`` holds the model name, classes, normaliser state and
    (for training checkpoints) the run's config."""
    from .registry import create_model

    tensors, doc = load_tensors(path)
    if not doc or "model" not in doc:
        raise ReslearnError(f"{path} has no reslearn metadata; load it with load_state_dict instead")
    model = create_model(doc["model"], **doc.get("model_kwargs", {}))
    if doc.get("kind") == "training":
        state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    else:
        state = tensors
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ReslearnError(f"{path} does not match model {doc['model']}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), doc


def tensors_to_json(d: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {k: {"shape": list(v.shape), "data": v.flatten().tolist()} for k, v in d.items()}


def tensors_from_json(d: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v["data"], dtype=torch.float32).view(v["shape"]) for k, v in d.items()}
