"""Run logs: CSV metrics (always), TensorBoard event files (when tensorboard is installed) and
the progress display (a bar on a terminal, plain lines in a log file); the window of training
numbers behind each row (``LogWindow``) and where a row goes (``RowOutput``)."""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

COLUMNS = ["iteration", "epoch", "lr", "train_loss", "train_err", "val_loss", "val_err",
           "test_loss", "test_err", "test_top5_err", "images_per_s", "elapsed_s"]


class MetricLogger:
    """Appends rows to ``metrics.csv`` (re-opened in append mode on resume, rows past the resumed
    iteration dropped so the file matches the run) and mirrors them to TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, resume_from: int | None = None) -> None:
        self.path = run_dir / "metrics.csv"
        if resume_from is not None and self.path.exists():
            rows = [r for r in read_metrics(self.path) if int(r["iteration"]) <= resume_from]
            self._write_all(rows)
        elif not self.path.exists() or resume_from is None:
            self._write_all([])
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: CSV only
                self.tb = None

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        if self.tb is not None:
            it = int(row["iteration"])
            for k, v in row.items():
                if k not in ("iteration", "epoch") and v is not None:
                    self.tb.add_scalar(k.replace("_", "/", 1) if k.startswith(("train_", "val_", "test_")) else k, v, it)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Training progress: a tqdm bar when ``stream`` is a terminal; otherwise (a log file, a pipe,
    CI) one plain line per logged row, so that ``reslearn train > log 2>&1`` holds readable lines
    and no carriage-return frames:

    ``resnet20 it 100/200 (50%) | loss 1.8551 | err 69.94% | lr 0.1 | 957 img/s | ETA 1m40s``

    A row with evaluation errors (``val_err``, ``test_err``) gets them at the end of its line
    (``| test err 71.20%``). ``train.progress=false`` keeps the plain lines of the evaluated rows
    only: quiet, but never silent until the end of a long run.
    """

    def __init__(self, *, total: int, initial: int, desc: str, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.total, self.done, self.desc = total, initial, desc
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._t0, self._start = time.perf_counter(), initial
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True,
                            leave=True, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def show(self, row: dict[str, Any]) -> None:
        """Show a logged row (its loss, error, lr and speed)."""
        loss, err, lr, ips = row.get("train_loss"), row.get("train_err"), row.get("lr"), row.get("images_per_s") or 0
        evals = {s: row[f"{s}_err"] for s in ("val", "test") if row.get(f"{s}_err") is not None}
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", err=f"{err:.1f}%", lr=f"{lr:.3g}", img_s=f"{ips:.0f}",
                                 **{f"{s}_err": f"{e:.1f}%" for s, e in evals.items()})
            return
        rate = (time.perf_counter() - self._t0) / max(self.done - self._start, 1)
        eta = _duration(rate * (self.total - self.done))
        print(f"{self.desc} it {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%) | "
              f"loss {loss:.4f} | err {err:.2f}% | lr {lr:.3g} | {ips:.0f} img/s | ETA {eta}"
              + "".join(f" | {s} err {e:.2f}%" for s, e in evals.items()), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LogWindow:
    """The training numbers behind the next metrics.csv row, over the iterations since the last.

    ``sums`` are the sums of the loss, the errors, the error's denominator and the samples (the
    loss is a sum over samples, so the row's mean is exact however the window's steps were
    batched). Checkpoints save them (as ``log_acc``), so a run resumed between two rows writes the
    row an uninterrupted run writes. The images and time since the last row give its throughput;
    the evaluation of a row is left out of the next row's time."""

    def __init__(self) -> None:
        self.sums = [0.0, 0.0, 0.0, 0.0]
        self.before = 0.0  # training seconds of the run before this process (a resumed run's checkpoint)
        self.start()

    def start(self) -> None:
        """Start the clocks: ``elapsed_s`` counts from here (the loop's start in this process),
        plus ``before``, so a resumed run's wall time is the whole run's."""
        self._begun = time.perf_counter()
        self.reset_clock()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self._begun

    def reset_clock(self) -> None:
        self._t0, self._seen = time.perf_counter(), 0.0

    def add(self, loss_sum: float, wrong: float, den: float, n: float) -> None:
        """Count one optimizer step's sums (over all ranks)."""
        self.sums = [a + b for a, b in zip(self.sums, (loss_sum, wrong, den, n))]
        self._seen += n

    def row(self, *, iteration: int, epoch: float, lr: float) -> dict[str, Any]:
        """The window's row: the mean loss, the training error in percent, images/s."""
        loss, wrong, den, n = self.sums
        took = time.perf_counter() - self._t0
        return {"iteration": iteration, "epoch": epoch, "lr": lr,
                "train_loss": loss / n if n else math.nan, "train_err": 100 * wrong / max(den, 1),
                "images_per_s": self._seen / took if took > 0 else None,
                "elapsed_s": self.elapsed()}

    def reset(self) -> None:
        """A new window, once the row (and its evaluation) is written."""
        self.sums = [0.0, 0.0, 0.0, 0.0]
        self.reset_clock()


@dataclass
class RowOutput:
    """Where the rows of the rank that writes go: metrics.csv and TensorBoard (``logger``) and the
    progress display, which shows every row (``every_row``: ``train.progress``) or the evaluated
    ones only. The other ranks get an empty one."""

    logger: MetricLogger | None = None
    progress: Progress | None = None
    every_row: bool = True

    def advance(self) -> None:
        """One more iteration done."""
        if self.progress is not None:
            self.progress.update(1)

    def write(self, row: dict[str, Any], *, evaluated: bool) -> None:
        if self.progress is not None and (self.every_row or evaluated):
            self.progress.show(row)
        if self.logger is not None:
            self.logger.log(row)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
