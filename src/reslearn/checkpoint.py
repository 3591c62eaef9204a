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
folder) with the permissions of the user's umask, and carry a SHA-256 of their tensors so
corruption is detected, not trained on. Files that are not reslearn safetensors (PyTorch pickles,
a run folder, weights of another shape) are refused with one line saying what they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import ReslearnError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "find_latest_checkpoint",
    "resolve_weights",
    "check_state_dict",
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
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    The file gets the mode a plain ``open()`` would give (0o666 less the umask): the temporary
    file is created with ``os.open(..., 0o666)``, not ``tempfile.mkstemp``, whose 0o600 would
    hide checkpoints from a teammate sharing the run folder. An ``OSError`` (disk full, read-only
    folder) names ``path``, not the temporary file."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e  # errno keeps the subclass (PermissionError...)
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - e.g. file systems without directory fsync
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` for UTF-8 text (config.yaml, run.json, final.json)."""
    atomic_write_bytes(path, text.encode())


def find_latest_checkpoint(run_dir: Path) -> Path | None:
    """The run folder's newest training checkpoint (``checkpoints/iter-*.safetensors``), or None."""
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("iter-*.safetensors"))
    return ckpts[-1] if ckpts else None


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


_PYTORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def _foreign_format(path: Path, raw: bytes) -> str | None:
    """What a file that is not safetensors looks like it is, for the error message."""
    if raw[8:9] == b"{":  # a safetensors header (JSON) after its 8-byte length: a damaged one
        return None
    if raw[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            names = []
        if any(n.endswith("data.pkl") for n in names):
            return "a PyTorch checkpoint (torch.save: a zip of pickles)"
        return "a zip archive"
    if raw[:1] == b"\x80" or path.suffix in _PYTORCH_SUFFIXES:  # pickle protocol 2+: legacy torch.save
        return "a PyTorch pickle file (torch.save)"
    return None


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
        what = _foreign_format(path, raw)
        if what:
            # Unpickling runs arbitrary code, so reslearn never does it; torch.load's
            # weights_only mode is PyTorch's restricted unpickler for state_dicts.
            raise ReslearnError(
                f"{path} is {what}, not safetensors; reslearn does not unpickle files. Load its weights in "
                f"Python with state = torch.load(path, weights_only=True) and model.load_state_dict(state)") from None
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


def resolve_weights(path: str | Path) -> Path:
    """A weights file as given, a run folder's ``model.safetensors``, or registered pretrained
    weights named ``pretrained:MODEL[/TAG]`` (:mod:`reslearn.weights`, checksum verified)."""
    if str(path).startswith("pretrained:"):
        from .weights import parse_ref, pretrained_path

        try:
            return pretrained_path(*parse_ref(str(path)))
        except ValueError as e:  # an unknown model or tag: one line for the CLI
            raise ReslearnError(str(e)) from None
    p = Path(path)
    if not p.is_dir():
        return p
    if (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    last = find_latest_checkpoint(p)
    hint = f"; its last checkpoint is {last}" if last else ""
    raise ReslearnError(f"{p} is a folder without model.safetensors (an unfinished run?){hint}")


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, *, hint: str = "") -> None:
    """Raise ``ReslearnError`` naming the first key where ``state`` does not fit ``model`` (a key
    only one of them has, or the two shapes), where ``load_state_dict`` would list them all;
    ``hint`` ends the line."""
    want = model.state_dict()
    name = getattr(model, "model_name", type(model).__name__)
    problem = None
    for key, t in want.items():
        if key not in state:
            problem = f"the model has {key} {_shape(t)}, the file has not"
        elif _shape(state[key]) != _shape(t):
            problem = f"{key} is {_shape(state[key])} in the file, {_shape(t)} in the model"
        if problem:
            break
    extra = next((k for k in state if k not in want), None)
    if problem is None and extra is not None:
        problem = f"the file has {extra} {_shape(state[extra])}, the model has not"
    if problem:
        raise ReslearnError(f"{source} does not fit {name}: {problem}" + (f"; {hint}" if hint else ""))


def load_model(path: str | Path, *, device: str | torch.device = "cpu"):
    """Rebuild the model stored in a reslearn weights file or training checkpoint (or a run
    folder's ``model.safetensors``).

    Returns ``(model, doc)`` where ``doc`` holds the model name, classes, normaliser state and
    (for training checkpoints) the run's config."""
    from .engine.device import select_device
    from .registry import create_model

    dev = device if isinstance(device, torch.device) else select_device(device, key="--device")
    path = resolve_weights(path)
    tensors, doc = load_tensors(path)
    if not doc or "model" not in doc:
        raise ReslearnError(f"{path} has no reslearn metadata; load it with load_state_dict instead")
    model = create_model(doc["model"], **doc.get("model_kwargs", {}))
    if doc.get("kind") == "training":
        state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    else:
        state = tensors
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(dev).eval(), doc


def tensors_to_json(d: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {k: {"shape": list(v.shape), "data": v.flatten().tolist()} for k, v in d.items()}


def tensors_from_json(d: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v["data"], dtype=torch.float32).view(v["shape"]) for k, v in d.items()}
