"""Run logs: CSV metrics (always), TensorBoard event files (when tensorboard is installed) and
the progress bar."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

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
