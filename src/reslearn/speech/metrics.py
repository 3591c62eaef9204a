"""Speech metrics: accuracy, keyword-spotting ROC curves (false alarm rate against false reject
rate) with a PNG writer, and word error rate.

ROC as Tang & Lin (ICASSP 2018, arXiv:1710.10361) draw it for the 12-class task, false alarm
rate on the x axis and false reject rate on the y axis: each keyword is a detector in its own
right, "keyword k present" when the softmax posterior of k reaches a threshold. Over the
evaluation clips, for a threshold t,

    false alarm rate  FAR_k(t) = fraction of clips *not* of k whose posterior of k is >= t
    false reject rate FRR_k(t) = fraction of clips of k whose posterior of k is < t

and the curve sweeps t from 0 to 1. One curve per model summarises the keywords (silence and
unknown are not keywords): we average FAR and FRR over the keywords at each shared threshold
(threshold averaging; Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters
2006). The curve runs from (FAR, FRR) = (1, 0) at t = 0 to (0, 1) above 1; lower-left is better.

Word error rate: (substitutions + deletions + insertions) / reference words, from the Levenshtein
alignment of word sequences, summed over the corpus before dividing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "accuracy",
    "keyword_roc",
    "average_roc",
    "frr_at_far",
    "plot_roc",
    "edit_distance",
    "word_error_rate",
]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set")
    return 100.0 * float((logits.argmax(-1) == labels).float().mean())


def _thresholds(num: int) -> np.ndarray:
    # 0 ... 1 and one step beyond 1, so the curve reaches both corners exactly.
    return np.append(np.linspace(0.0, 1.0, num), np.nextafter(1.0, 2.0))


def keyword_roc(
    posteriors: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    keyword: int,
    *,
    num_thresholds: int = 1001,
) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) of keyword class ``keyword`` at thresholds 0, 1/(n-1), ..., 1, and just above
    1 (n = ``num_thresholds``)."""
    p = np.asarray(posteriors, dtype=np.float64)[:, keyword]
    y = np.asarray(labels) == keyword
    if not y.any() or y.all():
        raise ValueError(f"keyword {keyword} needs both positive and negative clips")
    t = _thresholds(num_thresholds)
    # searchsorted over the sorted scores counts, for every threshold, the scores below it.
    pos, neg = np.sort(p[y]), np.sort(p[~y])
    frr = np.searchsorted(pos, t, side="left") / len(pos)
    far = 1.0 - np.searchsorted(neg, t, side="left") / len(neg)
    return far, frr


def average_roc(
    posteriors: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    keywords: Sequence[int],
    *,
    num_thresholds: int = 1001,
) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) averaged over ``keywords`` at each threshold (see the module docstring)."""
    if not len(keywords):
        raise ValueError("keywords must name at least one class")
    curves = [keyword_roc(posteriors, labels, k, num_thresholds=num_thresholds) for k in keywords]
    far = np.mean([c[0] for c in curves], axis=0)
    frr = np.mean([c[1] for c in curves], axis=0)
    return far, frr


def frr_at_far(far: np.ndarray, frr: np.ndarray, target: float) -> float:
    """The lowest false reject rate the curve reaches at a false alarm rate <= ``target``."""
    ok = np.asarray(far) <= target
    return float(np.min(np.asarray(frr)[ok])) if ok.any() else 1.0


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    title: str = "Keyword spotting ROC",
    max_far: float | None = None,
) -> Path:
    """Write the ROC curves ``{label: (far, frr)}`` to a PNG (headless, the Agg backend)."""
    if not curves:
        raise ValueError("curves must hold at least one (far, frr) pair")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    try:
        for label, (far, frr) in curves.items():
            ax.plot(far, frr, label=label, linewidth=1.2)
        ax.set_xlabel("False alarm rate")
        ax.set_ylabel("False reject rate")
        ax.set_title(title)
        if max_far is not None:
            ax.set_xlim(0, max_far)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two token sequences (unit costs)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
    """Corpus WER in percent: total edit distance / total reference words."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    words = sum(len(r) for r in refs)
    if words == 0:
        raise ValueError("word error rate needs at least one reference word")
    return 100.0 * sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / words
