"""Pretrained weights from reslearn's own reproduced runs: a local file registry.

Each entry is a reslearn weights file shipped inside the package (``reslearn/weights/``), listed
in ``index.json`` with its SHA-256 and the measured run it comes from (recipe, budget, seed,
commit and test error, the same row as in ``docs/results/<experiment>.csv``). Nothing is
downloaded, at import time or ever: a file is read only when asked for, and refused when its
checksum differs from the index. ``scripts/register_weights.py`` adds a finished run.

Usage::

    model = reslearn.create_model("resnet20", pretrained=True)      # weights that reproduce the paper
    model = reslearn.create_model("resnet20", pretrained="cifar10-table6")  # one run, by its tag
    model.pretrained_cfg["normalizer"]                              # the input preprocessing
    reslearn eval pretrained:resnet20                               # any command taking weights
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ReslearnError

__all__ = ["PretrainedWeights", "list_pretrained", "pretrained_entry", "pretrained_path", "sha256_file", "PREFIX"]

WEIGHTS_DIR = Path(__file__).resolve().parent
# The issues' target for a reproduced number (e.g. Table 6: "within +-0.5 points of the paper").
REPRODUCED_WITHIN = 0.5
PREFIX = "pretrained:"  # weights arguments of the CLI: pretrained:resnet20 or pretrained:resnet20/TAG


@dataclass(frozen=True)
class PretrainedWeights:
    """One registered weights file and the run that produced it."""

    model: str
    tag: str  # e.g. "cifar10-table6": the data set and the experiment that trained it
    file: str  # name inside reslearn/weights/
    sha256: str
    data: str
    recipe: str
    iterations: int
    seed: int
    test_err: float  # measured by the run, % on the data set's test split
    paper_test_err: float | None
    commit: str
    results: str  # the results CSV holding the run's row

    @property
    def reproduced(self) -> bool:
        """``test_err`` within REPRODUCED_WITHIN points of the paper's: only then a model's default."""
        return self.paper_test_err is not None and abs(self.test_err - self.paper_test_err) <= REPRODUCED_WITHIN

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def ref(self) -> str:
        return f"{PREFIX}{self.model}/{self.tag}"


@lru_cache(maxsize=None)
def _read_index(folder: Path) -> tuple[PretrainedWeights, ...]:
    doc = json.loads((folder / "index.json").read_text())
    return tuple(PretrainedWeights(**e) for e in doc["weights"])


def _index() -> tuple[PretrainedWeights, ...]:
    return _read_index(WEIGHTS_DIR)


def list_pretrained(model: str | None = None) -> list[PretrainedWeights]:
    """The registered weights (of ``model`` only, if given); a model's default is its first entry
    that reproduces the paper (``reproduced``)."""
    return [w for w in _index() if model is None or w.model == model]


def pretrained_entry(model: str, tag: str | None = None) -> PretrainedWeights:
    """The entry of ``model`` (its default, or ``tag``); ``ValueError`` naming what exists."""
    entries = list_pretrained(model)
    if not entries:
        have = sorted({w.model for w in _index()})
        raise ValueError(f"no pretrained weights for {model!r}; reslearn has them for: {', '.join(have) or 'none'}"
                         " (train one and load its model.safetensors instead)")
    if tag is None:  # the default: weights that reproduce the paper, never a run that does not
        good = [w for w in entries if w.reproduced]
        if not good:
            have = ", ".join(f"{w.tag!r} ({w.test_err:.2f}% test error; paper {w.paper_test_err}%)" for w in entries)
            raise ValueError(f"{model} has no pretrained weights that reproduce the paper yet; ask for one by its "
                             f"tag to load it anyway: {have}")
        return good[0]
    for w in entries:
        if w.tag == tag:
            return w
    raise ValueError(f"{model} has no pretrained weights tagged {tag!r}; tags: {', '.join(w.tag for w in entries)}")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pretrained_path(model: str, tag: str | None = None) -> Path:
    """The verified file of ``model``'s weights: a missing file or a SHA-256 other than the
    index's raises ``ReslearnError`` (a damaged or replaced file is never loaded)."""
    entry = pretrained_entry(model, tag)
    if not entry.path.is_file():
        raise ReslearnError(f"pretrained weights {entry.ref}: {entry.path} is missing from the installation")
    digest = sha256_file(entry.path)
    if digest != entry.sha256:
        raise ReslearnError(f"pretrained weights {entry.path} fail their checksum (sha256 {digest[:12]}..., "
                            f"index says {entry.sha256[:12]}...); reinstall reslearn")
    return entry.path


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``pretrained:NAME[/TAG]`` -> (NAME, TAG or None)."""
    name, _, tag = ref.removeprefix(PREFIX).partition("/")
    return name, tag or None


def load_pretrained(model: str, tag: str | None, kwargs: dict[str, Any]):
    """The registered weights of ``model`` in a freshly built network (train mode, like every
    ``create_model`` result), with ``pretrained_cfg`` (tag, classes, image size, normaliser,
    measured error). ``kwargs`` that contradict how the weights were trained raise ``ValueError``."""
    from ..checkpoint import load_model, tensors_from_json
    from ..data.augment import Normalizer

    entry = pretrained_entry(model, tag)
    net, doc = load_model(pretrained_path(model, entry.tag))
    trained = doc.get("model_kwargs", {})
    for k, v in kwargs.items():  # an argument that builds another network than the one trained
        if k not in trained or trained[k] != v:
            was = f"{k}={trained[k]!r}" if k in trained else f"the builder's default {k}"
            raise ValueError(f"{entry.ref} was trained with {was}, not {k}={v!r}; build it with the pretrained "
                             "weights as they are, then change it (e.g. model.reset_classifier(n))")
    net.pretrained_cfg = {  # type: ignore[assignment]
        "ref": entry.ref, "tag": entry.tag, "classes": doc.get("classes"), "image_size": doc.get("image_size"),
        "normalizer": Normalizer.from_state_dict(tensors_from_json(doc["normalizer"])),
        "test_err": entry.test_err, "data": entry.data, "recipe": entry.recipe,
    }
    return net.train()
