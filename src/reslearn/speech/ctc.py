"""Connectionist temporal classification (Graves et al., ICML 2006) for sequence models: greedy
(best path) decoding and the task the training engine runs (CTC loss, word error rate).

Class 0 is the blank. Best-path decoding takes the most likely class of every frame, merges
repeats and drops blanks (Graves et al. 2006, Sec. 3.2, "best path decoding"), so a repeated word
needs a blank between its two occurrences.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.base import ClassifierModel, check_choice
from ..tasks import Task
from .metrics import edit_distance

__all__ = ["greedy_decode", "output_lengths", "CTCTask"]


def greedy_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor | None = None, *, blank: int = 0
) -> list[list[int]]:
    """Best-path decoding of (B, T, C) scores (logits or log-probabilities) with ``lengths``
    valid frames per row: the label sequences without blanks and repeats."""
    best = log_probs.argmax(-1).cpu()
    n, t = best.shape
    lens = [t] * n if lengths is None else lengths.cpu().tolist()
    out = []
    for row, length in zip(best.tolist(), lens):
        seq, prev = [], blank
        for c in row[:length]:
            if c != prev and c != blank:
                seq.append(c)
            prev = c
        out.append(seq)
    return out


def output_lengths(in_lengths: torch.Tensor, t_in: int, t_out: int) -> torch.Tensor:
    """Valid output frames of a model that maps ``t_in`` input frames to ``t_out`` (the WRBN
    keeps time, t_out = t_in; a subsampling model scales the lengths)."""
    if t_out == t_in:
        return in_lengths
    return torch.div(in_lengths * t_out + t_in - 1, t_in, rounding_mode="floor").clamp(1, t_out)


def _forward(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    return model(x, lengths) if isinstance(inner, ClassifierModel) and inner.takes_lengths else model(x)


class CTCTask(Task):
    """CTC training and word error rate evaluation for batches
    ``((features, lengths), (targets, target_lengths))`` and models giving (B, T, classes).

    ``loss`` is ``F.ctc_loss`` per utterance divided by its target length
    (``normalize="target"``, PyTorch's "mean") or by its output frames (``"frames"``: a per-frame
    scale like cross-entropy, about log(classes) at the start, which plain SGD without gradient
    clipping tolerates), averaged over the batch; its sums are the decoded word errors, the
    reference words and the utterance count. ``evaluate`` returns the mean per-utterance loss
    (unnormalised) and the corpus WER (percent, ``primary``).
    """

    primary = "wer"
    # the trainer's train_err: decoded word errors over reference words of the training batches
    train_error_keys = ("word_errors", "ref_words")

    def __init__(self, *, blank: int = 0, normalize: str = "target") -> None:
        check_choice("normalize", normalize, ("target", "frames"))
        self.blank, self.normalize = blank, normalize

    def _run(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        (x, lengths), (targets, target_lengths) = batch
        logits = _forward(model, x, lengths)
        log_probs = logits.float().log_softmax(-1)
        out_lens = output_lengths(lengths, x.shape[-1], log_probs.shape[1])
        return log_probs, out_lens, targets, target_lengths

    def _ctc(self, log_probs, out_lens, targets, target_lengths, reduction: str) -> torch.Tensor:
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            out_lens,
            target_lengths,
            blank=self.blank,
            reduction=reduction,
            zero_infinity=True,
        )

    def _errors(self, log_probs, out_lens, targets, target_lengths) -> tuple[int, int]:
        hyps = greedy_decode(log_probs.detach(), out_lens, blank=self.blank)
        refs = _references(targets, target_lengths)
        return sum(edit_distance(r, h) for r, h in zip(refs, hyps)), sum(len(r) for r in refs)

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        log_probs, out_lens, targets, target_lengths = self._run(model, batch)
        if self.normalize == "target":
            loss = self._ctc(log_probs, out_lens, targets, target_lengths, "mean")
        else:
            per_utt = self._ctc(log_probs, out_lens, targets, target_lengths, "none")
            loss = (per_utt / out_lens.clamp_min(1).to(per_utt.dtype)).mean()
        errors, words = self._errors(log_probs, out_lens, targets, target_lengths)
        return loss, {"word_errors": errors, "ref_words": words, "n": len(target_lengths)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, source) -> dict[str, float]:
        total, errors, words, n = 0.0, 0, 0, 0
        for batch in source.iter_epoch(0):
            log_probs, out_lens, targets, target_lengths = self._run(model, batch)
            total += float(self._ctc(log_probs, out_lens, targets, target_lengths, "sum"))
            e, w = self._errors(log_probs, out_lens, targets, target_lengths)
            errors, words, n = errors + e, words + w, n + len(target_lengths)
        n = max(n, 1)
        return {"loss": total / n, "wer": 100.0 * errors / max(words, 1), "n": n}


def _references(targets: torch.Tensor, target_lengths: torch.Tensor) -> list[Sequence[int]]:
    rows = targets.cpu().tolist()
    return [row[:length] for row, length in zip(rows, target_lengths.cpu().tolist())]
