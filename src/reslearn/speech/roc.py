"""ROC curves of trained keyword-spotting checkpoints: ``reslearn analyze roc CKPT ... -o roc.png``.

Each checkpoint is evaluated on a split of the data it was trained on (the run's ``config.yaml``
beside the weights, or the config inside a training checkpoint): softmax posteriors, then false
alarm against false reject rate averaged over the keywords (``reslearn.speech.metrics``), one
curve per checkpoint in one PNG.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..checkpoint import load_model
from ..config import Config, DataConfig, config_from_dict
from ..data.bundle import EVAL_BATCH_SIZE
from ..errors import ReslearnError
from .commands import SILENCE, UNKNOWN, KWSTask, kws_sources, source_options
from .metrics import accuracy, average_roc, frr_at_far, plot_roc

__all__ = ["run_config", "kws_checkpoint_source", "kws_roc"]


def run_config(path: str | Path, doc: dict[str, Any]) -> Config:
    """The config a checkpoint was trained with: inside a training checkpoint, else the run
    folder's ``config.yaml`` beside it, else defaults for its data set name."""
    if doc.get("config"):
        return config_from_dict(doc["config"])
    beside = Path(path).resolve().parent / "config.yaml"
    if beside.is_file():
        from ..config import yaml_load

        return config_from_dict(yaml_load(beside.read_text()))
    return Config(data=DataConfig(name=doc.get("data", "")))


def kws_checkpoint_source(
    path: str | Path, *, root: str | None = None, split: str = "test", device: str = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
):
    """(model, doc, source of ``split``) for a keyword-spotting checkpoint."""
    model, doc = load_model(path, device=device)
    cfg = run_config(path, doc)
    if cfg.data.name != "speech-commands":
        raise ReslearnError(
            f"{path} was trained on {cfg.data.name or 'unknown data'}; ROC curves are for "
            f"keyword-spotting checkpoints (data.name speech-commands)"
        )
    data = replace(cfg.data, root=root) if root else cfg.data
    options = {k: v for k, v in data.options.items() if k != "eval_splits"}  # training-time only
    opts = source_options(data, **{**options, "eval_batch_size": batch_size})
    src = kws_sources(batch_size=batch_size, splits=(split,), device=device, **opts)[split]
    if list(src.data.classes) != list(doc.get("classes", src.data.classes)):
        raise ReslearnError(
            f"{path} predicts {', '.join(doc['classes'])}; the data has {', '.join(src.data.classes)}"
        )
    return model, doc, src


def kws_roc(
    paths: Sequence[str | Path],
    *,
    out: str | Path,
    root: str | None = None,
    split: str = "test",
    device: str = "cpu",
    max_far: float | None = None,
) -> dict[str, Any]:
    """Evaluate each checkpoint, draw their keyword-averaged ROC curves into ``out`` (PNG) and
    return per checkpoint the accuracy and the false reject rate at 1% and 5% false alarms."""
    curves, rows = {}, []
    for path in paths:
        model, doc, src = kws_checkpoint_source(path, root=root, split=split, device=device)
        probs, labels = KWSTask.posteriors(model, src)
        keywords = [i for i, c in enumerate(src.data.classes) if c not in (SILENCE, UNKNOWN)]
        far, frr = average_roc(probs, labels, keywords)
        label = doc["model"] if doc["model"] not in curves else f"{doc['model']} ({Path(path).parent.name})"
        curves[label] = (far, frr)
        rows.append({
            "checkpoint": str(path), "model": doc["model"], "label": label, "n": len(labels),
            "accuracy": accuracy(probs, labels),
            "frr_at_far_1pct": frr_at_far(far, frr, 0.01), "frr_at_far_5pct": frr_at_far(far, frr, 0.05),
        })
    png = plot_roc(curves, out, title=f"Keyword spotting ROC ({split}, {rows[0]['n']} clips)", max_far=max_far)
    return {"curves": rows, "png": str(png), "split": split}

