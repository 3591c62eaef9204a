"""Error curves as He et al. 2016 draw them (Figs. 1, 4, 6): training error thin, test error bold,
against iterations, one colour per network."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from .engine.logging import read_metrics

__all__ = ["plot_runs", "run_label"]


def run_label(run_dir: Path) -> str:
    return Path(run_dir).name


def _series(rows, key):
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(int(r["iteration"]))
            ys.append(float(r[key]))
    return xs, ys


def _run_series(path: Path, eval_split: str) -> tuple[tuple[list, list], tuple[list, list]]:
    """The training and ``eval_split`` error curves of a metrics.csv; a file that is not a
    reslearn metrics.csv is a one-line error naming it."""
    from .errors import ReslearnError

    try:
        with open(path, newline="") as f:
            if "iteration" not in next(csv.reader(f), []):
                raise KeyError("iteration")
        rows = read_metrics(path)
        return _series(rows, "train_err"), _series(rows, f"{eval_split}_err")
    except KeyError as e:
        raise ReslearnError(f"{path} is not a reslearn metrics.csv (no {e} column)") from None
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise ReslearnError(f"{path} is not a reslearn metrics.csv ({str(e).splitlines()[0]})") from None


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    eval_split: str = "test",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Overlay the error curves of several runs; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .errors import ReslearnError

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(run_dirs):
        path = Path(run) / "metrics.csv"
        if not path.is_file():
            raise ReslearnError(f"{run} has no metrics.csv (is it a run folder?)")
        (tx, ty), (ex, ey) = _run_series(path, eval_split)
        label = labels[i] if labels else run_label(Path(run))
        c = colors[i % len(colors)]
        ax.plot(tx, ty, color=c, lw=0.8, alpha=0.8, label=f"{label} train")
        ax.plot(ex, ey, color=c, lw=2.2, label=f"{label} {eval_split}")
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.set_title(title or "training error (thin) and " + eval_split + " error (bold)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
