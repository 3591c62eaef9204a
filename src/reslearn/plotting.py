"""Error curves as He et al. 2016 draw them (Figs. 1, 4, 6): training error thin, test error bold,
against iterations, one colour per network."""

from __future__ import annotations

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
        rows = read_metrics(path)
        label = labels[i] if labels else run_label(Path(run))
        c = colors[i % len(colors)]
        x, y = _series(rows, "train_err")
        ax.plot(x, y, color=c, lw=0.8, alpha=0.8, label=f"{label} train")
        x, y = _series(rows, f"{eval_split}_err")
        ax.plot(x, y, color=c, lw=2.2, label=f"{label} {eval_split}")
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
