"""Wide residual BLSTM network (WRBN): Heymann, Drude & Haeb-Umbach, "Wide Residual BLSTM Network
with Discriminative Speaker Adaptation for Robust Speech Recognition", CHiME-4 workshop 2016.

A wide residual network (Zagoruyko & Komodakis 2016, pre-activation units with dropout between
the convolutions) over the log-mel spectrogram, frequency as height and time as width, followed
by bidirectional LSTMs and feed-forward layers, one output per frame:

    Conv(3x3, S) -> ResBlock(S, 80, N) -> ResBlock(S, 160, N) -> ResBlock(S, 320, N) -> BN
        -> B x 320 x F x T
    -> learned weighted sum over the F frequency bins of each channel -> B x T x 320
    -> dropout -> BLSTM(512, directions summed) -> dropout -> BLSTM(512, directions
       concatenated) -> dropout
    -> [FF(1024) -> BN -> ELU] x 2 -> output layer.

ResBlock(S, C, N) is one BlockA (its shortcut a 1x1 convolution with stride S) and N - 1 BlockB
(identity shortcut); both are BN-ELU-Conv(3x3, S)-BN-ELU-Dropout(0.5)-Conv(3x3, 1). Strides act
on frequency only, time keeps its resolution (one output per input frame). With the strides
(2; 1, 2, 2) of a public TensorFlow port of the CHiME-4 WRBN (Peidong Wang, 2017), 80 bins give
F = 80/8 = 10; widths are 16 and 5 x (16, 32, 64) = 80, 160, 320 as in a WRN with widening
factor 5, and N = 3, also as in the port.

Choices where the text or the port leaves room (all configurable):

* ``in_chans=1`` (log-mel); the CHiME-4 system fed 3 channels (static, delta, delta-delta).
* ``freq_pool="per_channel"`` learns one weight vector over F for each channel (plus a bias, then
  ELU as the port); the port's pooling layer has one F-vector shared by all channels:
  ``"shared"``.
* after the last residual block, BN then ELU (pre-activation networks end with an activation;
  the port does the same).
* standard ``nn.LSTM`` cells (the port batch-normalises the LSTM input transform).
* two feed-forward layers as the description has them; the port has one before the output
  (``wrbn(ff_layers=1)``).
* batch norm in the feed-forward layers runs over all frames of the batch, padding included.
* the output: the paper trains a hybrid system (about 2k senones); here the output layer gives
  per-frame logits for CTC (``num_classes`` = blank + vocabulary; ``reslearn.speech.ctc``).

Input (B, in_chans, n_bins, T); output (B, T, num_classes) logits.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch.func import functional_call

from ..layers import Describable
from ..registry import register_model
from .base import ClassifierModel, check_choice, check_num_classes, check_positive

__all__ = ["WRBN", "WRBNBlock", "BLSTM", "FrequencyPool", "wrbn", "WRBN_CONFIGS"]

PAPER = (
    "Heymann, Drude & Haeb-Umbach, Wide Residual BLSTM Network with Discriminative Speaker "
    "Adaptation for Robust Speech Recognition, CHiME-4 2016"
)


def _conv3x3(in_ch: int, out_ch: int, freq_stride: int = 1) -> nn.Conv2d:
    # Pad 1 on both axes: time keeps its length, frequency shrinks to ceil(F / stride).
    return nn.Conv2d(in_ch, out_ch, 3, stride=(freq_stride, 1), padding=1, bias=False)


class WRBNBlock(nn.Module, Describable):
    """BlockA (``projection=True``: 1x1 conv with stride S on the pre-activated input as the
    shortcut) or BlockB (identity): BN-ELU-Conv(3x3, S)-BN-ELU-Dropout-Conv(3x3, 1)."""

    def __init__(
        self, in_ch: int, out_ch: int, *, freq_stride: int, dropout: float, projection: bool
    ) -> None:
        super().__init__()
        if not projection and (in_ch != out_ch or freq_stride != 1):
            raise ValueError("an identity shortcut needs in_ch == out_ch and stride 1")
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = nn.ELU()
        self.conv1 = _conv3x3(in_ch, out_ch, freq_stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.ELU()
        self.drop = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride=(freq_stride, 1), bias=False) if projection else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.act1(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(o)
        y = self.conv2(self.drop(self.act2(self.bn2(self.conv1(o)))))
        return y + short

    def describe(self) -> list[str]:
        s = self.conv1.stride[0]
        c = self.conv1.out_channels
        return [f"3x3, {c}" + (f", freq stride {s}" if s > 1 else ""), f"3x3, {c}"]


class FrequencyPool(nn.Module):
    """B x C x F x T -> B x T x C: a learned weighted sum over the F bins (one weight vector per
    channel, or one shared), plus a bias per channel, then ELU."""

    def __init__(self, channels: int, freq_bins: int, *, per_channel: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels if per_channel else 1, freq_bins), 1 / freq_bins))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bcft,cf->btc", x, self.weight.expand(x.shape[1], -1))
        return self.act(y + self.bias)


class BLSTM(nn.Module):
    """Dropout on the input, then a bidirectional LSTM whose two directions are summed
    (``merge="sum"``, output ``hidden``) or concatenated (``"concat"``, ``2 * hidden``).

    With ``lengths``, each row is read over its first ``lengths`` frames only (outputs after
    them are 0), as with packed sequences, but computed from padded tensors: the forward
    direction runs over the rows as they are, the backward direction (its ``*_reverse``
    weights, run as a one-way LSTM) over each row reversed within its length, so that
    neither direction reads padding before a valid frame. The backward pass of packed
    sequences on the CPU grows with the square of the length; this stays linear (several
    times faster for utterances of a few hundred frames) and does the work of one
    bidirectional pass. The parameters stay those of the one ``nn.LSTM`` (state_dict keys
    ``lstm.weight_ih_l0``, ``lstm.weight_ih_l0_reverse``, ...).
    """

    def __init__(self, in_features: int, hidden: int, *, merge: str, dropout: float) -> None:
        super().__init__()
        self.merge = check_choice("merge", merge, ("sum", "concat"))
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(in_features, hidden, batch_first=True, bidirectional=True)
        self.out_features = hidden if merge == "sum" else 2 * hidden
        # A one-way LSTM of the same shape, without parameters of its own (meta device, kept out
        # of the module tree): each direction runs through it with its weights from self.lstm.
        self.__dict__["_one_way"] = nn.LSTM(in_features, hidden, batch_first=True, device="meta")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.drop(x)
        y = self.lstm(x)[0] if lengths is None else self._within_lengths(x, lengths)
        fw, bw = y.chunk(2, dim=-1)
        return fw + bw if self.merge == "sum" else y

    def _direction(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        """One direction of ``self.lstm`` (``suffix`` "" forward, "_reverse" backward) run
        left to right over ``x``."""
        params = {n: getattr(self.lstm, n + suffix) for n in self._one_way._flat_weights_names}
        with warnings.catch_warnings():
            # on CUDA the borrowed weights are not one contiguous cuDNN buffer (a copy per call)
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
            return functional_call(self._one_way, params, (x,))[0]

    def _within_lengths(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device)
        lengths = lengths.to(x.device)
        valid = (t < lengths[:, None])[..., None]
        # frame t of a reversed row is frame length - 1 - t; reversing twice restores the order
        rev = (lengths[:, None] - 1 - t).clamp_min(0)[..., None]
        fw = self._direction(x, "")
        bw = self._direction(x.gather(1, rev.expand_as(x)) * valid, "_reverse")
        bw = bw.gather(1, rev.expand_as(bw))
        return torch.cat([fw, bw], dim=-1) * valid


class _FeedForward(nn.Module):
    """Linear (no bias: BN follows) -> BN over features -> ELU, on (B, T, D)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.linear(x).transpose(1, 2)).transpose(1, 2)
        return self.act(y)


def _freq_out(bins: int, stride: int) -> int:
    return (bins - 1) // stride + 1  # kernel 3, padding 1


class WRBN(ClassifierModel):
    """The wide residual BLSTM network; see the module docstring.

    Args:
        num_classes: outputs per frame (CTC: blank + vocabulary).
        in_chans: input channels (1 log-mel; 3 with deltas as the CHiME-4 system).
        n_bins: frequency bins of the input (80).
        stem_width: channels of the first convolution (16).
        widths: channels of the three residual stages (80, 160, 320).
        blocks: N, units per stage (3).
        freq_strides: frequency strides of the first convolution and of the three stages.
        dropout: inside the residual units (0.5).
        lstm_hidden: units per direction of both BLSTMs (512).
        lstm_dropout: before each BLSTM and after the second (0.5).
        ff_sizes: widths of the feed-forward layers (1024, 1024).
        freq_pool: "per_channel" or "shared" weights over the F bins.
    """

    stage_names = ("stem", "res1", "res2", "res3", "post", "pool", "blstm1", "blstm2", "ff", "fc")
    # Tells tasks that ``forward`` takes frame lengths (the BLSTMs read each row within its length).
    takes_lengths = True

    def __init__(
        self,
        *,
        num_classes: int = 11,
        in_chans: int = 1,
        n_bins: int = 80,
        stem_width: int = 16,
        widths: tuple[int, int, int] = (80, 160, 320),
        blocks: int = 3,
        freq_strides: tuple[int, int, int, int] = (2, 1, 2, 2),
        dropout: float = 0.5,
        lstm_hidden: int = 512,
        lstm_dropout: float = 0.5,
        ff_sizes: tuple[int, ...] = (1024, 1024),
        freq_pool: str = "per_channel",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        for name, value in (
            ("in_chans", in_chans),
            ("n_bins", n_bins),
            ("stem_width", stem_width),
            ("blocks", blocks),
            ("lstm_hidden", lstm_hidden),
        ):
            check_positive(name, value)
        if len(widths) != 3 or len(freq_strides) != 4:
            raise ValueError(
                f"widths needs 3 entries and freq_strides 4; got {widths!r}, {freq_strides!r}"
            )
        for name, values in (("widths", widths), ("freq_strides", freq_strides), ("ff_sizes", ff_sizes)):
            for v in values:
                check_positive(name, v)
        for name, p in (("dropout", dropout), ("lstm_dropout", lstm_dropout)):
            if not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1); got {p!r}")
        check_choice("freq_pool", freq_pool, ("per_channel", "shared"))
        self.n_bins, self.in_chans = n_bins, in_chans
        self.stem = _conv3x3(in_chans, stem_width, freq_strides[0])
        bins, ch = _freq_out(n_bins, freq_strides[0]), stem_width
        for i, (width, stride) in enumerate(zip(widths, freq_strides[1:]), start=1):
            units = [WRBNBlock(ch, width, freq_stride=stride, dropout=dropout, projection=True)]
            units += [
                WRBNBlock(width, width, freq_stride=1, dropout=dropout, projection=False)
                for _ in range(blocks - 1)
            ]
            self.add_module(f"res{i}", nn.Sequential(*units))
            bins, ch = _freq_out(bins, stride), width
        self.freq_bins = bins
        self.post = nn.Sequential(nn.BatchNorm2d(ch), nn.ELU())
        self.pool = FrequencyPool(ch, bins, per_channel=freq_pool == "per_channel")
        self.blstm1 = BLSTM(ch, lstm_hidden, merge="sum", dropout=lstm_dropout)
        self.blstm2 = BLSTM(lstm_hidden, lstm_hidden, merge="concat", dropout=lstm_dropout)
        self.drop = nn.Dropout(lstm_dropout)
        dims = [2 * lstm_hidden, *ff_sizes]
        self.ff = nn.Sequential(*(_FeedForward(a, b) for a, b in zip(dims, dims[1:])))
        self.num_features = dims[-1]
        self.fc = nn.Linear(self.num_features, num_classes)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """The residual CNN: (B, in_chans, n_bins, T) -> (B, widths[-1], F, T)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or x.shape[2] != self.n_bins:
            raise ValueError(
                f"input must be (B, {self.in_chans}, {self.n_bins}, T); got {tuple(x.shape)}"
            )
        x = self.res3(self.res2(self.res1(self.stem(x))))
        return self.post(x)

    def forward_features(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, in_chans, n_bins, T) -> (B, T, 2 * lstm_hidden), the second BLSTM's output."""
        h = self.pool(self.conv_features(x))
        h = self.blstm2(self.blstm1(h, lengths), lengths)
        return self.drop(h)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = self.ff(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, lengths))


def wrbn(
    *,
    num_classes: int = 11,
    in_chans: int = 1,
    n_bins: int = 80,
    width_scale: float = 1.0,
    blocks: int = 3,
    freq_strides: tuple[int, int, int, int] = (2, 1, 2, 2),
    dropout: float = 0.5,
    lstm_hidden: int = 512,
    lstm_dropout: float = 0.5,
    ff_size: int = 1024,
    ff_layers: int = 2,
    freq_pool: str = "per_channel",
) -> WRBN:
    """WRBN with every convolution width scaled by ``width_scale`` (1.0: 16; 80, 160, 320)."""
    if not width_scale > 0:
        raise ValueError(f"width_scale must be > 0; got {width_scale!r}")
    check_positive("ff_layers", ff_layers)
    scaled = lambda c: max(1, round(c * width_scale))  # noqa: E731
    return WRBN(
        num_classes=num_classes,
        in_chans=in_chans,
        n_bins=n_bins,
        stem_width=scaled(16),
        widths=(scaled(80), scaled(160), scaled(320)),
        blocks=blocks,
        freq_strides=freq_strides,
        dropout=dropout,
        lstm_hidden=lstm_hidden,
        lstm_dropout=lstm_dropout,
        ff_sizes=(ff_size,) * ff_layers,
        freq_pool=freq_pool,
    )


# The paper's size and a CPU-sized twin (a few minutes of training on connected digits).
WRBN_CONFIGS = {
    "wrbn": dict(),
    "wrbn-small": dict(width_scale=0.25, blocks=1, lstm_hidden=96, ff_size=96),
}

for _name, _cfg in WRBN_CONFIGS.items():
    register_model(
        _name,
        family="wrbn",
        paper=PAPER,
        input_size=(1, 80, 100),  # 80 log-mel bins x 1 s of 10 ms frames
        num_classes=11,  # CTC blank + the ten digit words (reslearn.speech.digits)
        test_input_size=(1, 80, 6),
        task="sequence",
        **_cfg,
    )(wrbn)
