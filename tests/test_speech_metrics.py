"""Keyword ROC, the PNG writer, edit distance / WER and CTC decoding on hand-worked examples."""

import numpy as np
import pytest
import torch

from reslearn.speech.ctc import CTCTask, greedy_decode, output_lengths
from reslearn.speech.metrics import (
    accuracy,
    average_roc,
    edit_distance,
    frr_at_far,
    keyword_roc,
    plot_roc,
    word_error_rate,
)

# 5 clips, 3 classes; labels 0 (silence), 1, 2 (keywords)
POST = np.array(
    [
        [0.1, 0.8, 0.1],  # a "1", detected from t <= 0.8
        [0.5, 0.3, 0.2],  # a "1", missed for t > 0.3
        [0.2, 0.6, 0.2],  # a "2" that looks like "1": false alarm of 1 until t > 0.6
        [0.0, 0.1, 0.9],  # a "2"
        [0.7, 0.2, 0.1],  # silence
    ]
)
LABELS = np.array([1, 1, 2, 2, 0])


def test_keyword_roc_by_hand():
    far, frr = keyword_roc(POST, LABELS, 1, num_thresholds=11)  # t = 0, 0.1, ..., 1, >1
    # keyword 1 at t = 0.5: positives 0.8 (kept), 0.3 (rejected) -> FRR 1/2;
    # negatives 0.6 (alarm), 0.1, 0.2 -> FAR 1/3
    assert (far[5], frr[5]) == pytest.approx((1 / 3, 1 / 2))
    assert (far[0], frr[0]) == (1.0, 0.0) and (far[-1], frr[-1]) == (0.0, 1.0)
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0)
    far2, frr2 = keyword_roc(POST, LABELS, 2, num_thresholds=11)
    avg_far, avg_frr = average_roc(POST, LABELS, [1, 2], num_thresholds=11)
    np.testing.assert_allclose(avg_far, (far + far2) / 2)
    np.testing.assert_allclose(avg_frr, (frr + frr2) / 2)
    # keyword 2 at t = 0.5: positives 0.2 (rejected), 0.9 (kept); no negative >= 0.5
    assert (far2[5], frr2[5]) == pytest.approx((0.0, 0.5))
    assert frr_at_far(far2, frr2, 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive and negative"):
        keyword_roc(POST, np.ones(5, dtype=int), 1)


def test_plot_roc_writes_a_png(tmp_path):
    curves = {"res8": average_roc(POST, LABELS, [1, 2]), "chance": (np.linspace(1, 0, 5), np.linspace(0, 1, 5))}
    path = plot_roc(curves, tmp_path / "roc" / "roc.png")
    head = path.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == 75.0


def test_edit_distance_and_wer_by_hand():
    assert edit_distance("kitten", "sitting") == 3
    ref = [["one", "two", "three"], ["four", "five"]]
    hyp = [["one", "three"], ["four", "six", "five", "five"]]
    # utterance 1: one deletion; utterance 2: "six" inserted and "five" inserted -> 2
    assert edit_distance(ref[0], hyp[0]) == 1 and edit_distance(ref[1], hyp[1]) == 2
    assert word_error_rate(ref, hyp) == pytest.approx(100 * 3 / 5)
    assert word_error_rate([["a", "b"]], [["c", "d"]]) == 100.0  # two substitutions
    assert word_error_rate([["a"]], [["a", "b", "c"]]) == 200.0  # WER can pass 100%


def test_greedy_decode_merges_repeats_and_drops_blanks():
    frames = torch.tensor([[0, 1, 1, 0, 1, 2, 2, 0, 3, 3], [2, 2, 2, 0, 0, 2, 1, 1, 1, 1]])
    scores = torch.nn.functional.one_hot(frames, 4).float()
    assert greedy_decode(scores) == [[1, 1, 2, 3], [2, 2, 1]]
    assert greedy_decode(scores, torch.tensor([4, 3])) == [[1], [2]]
    assert output_lengths(torch.tensor([10, 7]), 10, 5).tolist() == [5, 4]


class _Oracle(torch.nn.Module):
    """Emits, for every utterance, one-hot frames spelling ``spell`` with blanks between."""

    def __init__(self, spell):
        super().__init__()
        self.spell = spell
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, t = x.shape[0], x.shape[-1]
        out = torch.full((b, t, 11), -8.0)
        out[..., 0] = 8.0
        for i, seq in enumerate(self.spell):
            for j, c in enumerate(seq):
                out[i, 2 * j + 1, 0], out[i, 2 * j + 1, c] = -8.0, 8.0
        return out + self.bias


class _OneBatch:
    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return 1

    def iter_epoch(self, epoch, start=0):
        yield from [self.batch][start:]


def test_ctc_task_on_a_hand_made_batch():
    targets = torch.tensor([[4, 2, 2], [10, 0, 0]])
    batch = ((torch.zeros(2, 1, 80, 12), torch.tensor([12, 9])), (targets, torch.tensor([3, 1])))
    task = CTCTask()
    perfect = task.evaluate(_Oracle([[4, 2, 2], [10]]), _OneBatch(batch))
    assert perfect["wer"] == 0.0 and perfect["loss"] < 0.1 and perfect["n"] == 2
    one_wrong = task.evaluate(_Oracle([[4, 2], [3]]), _OneBatch(batch))
    assert one_wrong["wer"] == pytest.approx(100 * 2 / 4)  # a deletion and a substitution
    loss, sums = task.loss(_Oracle([[4, 2], [3]]), batch)
    assert sums == {"word_errors": 2, "ref_words": 4, "n": 2}
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > perfect["loss"]
    assert task.primary == "wer"
