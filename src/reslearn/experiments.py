"""Runs of several networks with one recipe, compared side by side (the shape of every
experiment in He et al. 2016: plain vs residual, shallow vs deep)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import find_latest_checkpoint
from .config import Config, load_config
from .engine.rundir import check_same_run
from .engine.trainer import train
from .errors import ReslearnError
from .plotting import plot_runs
from .registry import model_info
from .results import record_runs, run_row

__all__ = ["compare", "plan_runs", "run_one", "check_same_run", "format_table", "recipe_label"]


def run_one(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (resuming its last checkpoint), or, when the folder already
    holds this run finished, return its ``final.json``; a folder holding another run is refused."""
    check_same_run(cfg, run_dir)
    final = run_dir / "final.json"
    if final.is_file():  # done already: resumable experiments skip finished nets
        return json.loads(final.read_text())
    return train(cfg, run_dir=run_dir, resume=find_latest_checkpoint(run_dir) is not None)


def _run_parallel(jobs: list[tuple[list[str], Path]], n: int) -> None:
    """Train several runs at once as ``reslearn train`` subprocesses (small nets leave a GPU
    mostly idle, so several share it well). Each keeps its own log in ``RUN_DIR/train.log``."""
    import subprocess
    import sys
    import time

    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < n:
            args, run_dir = pending.pop(0)
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "train.log", "w")
            cmd = [sys.executable, "-m", "reslearn.cli", "train", *args, "--run-dir", str(run_dir)]
            if find_latest_checkpoint(run_dir) is not None:
                cmd.append("--resume")
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), run_dir, log))
        time.sleep(0.5)
        for job in list(running):
            proc, run_dir, log = job
            if proc.poll() is not None:
                log.close()
                running.remove(job)
                if proc.returncode != 0:
                    failed.append(run_dir)
    if failed:
        last = (failed[0] / "train.log").read_text().strip().splitlines()[-1:] or [""]
        raise ReslearnError(f"{len(failed)} run(s) failed, e.g. {failed[0]}: {last[0]}")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison: model, seed, resolved config and run folder."""

    name: str
    seed: int
    cfg: Config
    run_dir: Path


def plan_runs(models: Sequence[str], *, recipe: str | None, overrides: Sequence[str], out_dir: str | Path,
              seeds: Sequence[int] = (0,)) -> list[PlannedRun]:
    """Every run of a comparison, configured and checked before any of them trains: an unknown
    model name, a bad config key or value, or a folder holding a different run fails now, not
    after the first nets have trained for hours."""
    plan = []
    for name in models:
        model_info(name)  # unknown names: ValueError with a suggestion
        for seed in seeds:
            cfg = load_config(recipe, list(overrides) + [f"model.name={name}", f"train.seed={seed}"])
            run_dir = Path(out_dir) / f"{name}-seed{seed}"
            check_same_run(cfg, run_dir)
            plan.append(PlannedRun(name, seed, cfg, run_dir))
    return plan


def _train_args(recipe: str | None, overrides: Sequence[str], run: PlannedRun) -> list[str]:
    """The ``reslearn train`` arguments of one planned run (``--jobs`` trains in subprocesses)."""
    return (["--recipe", recipe] if recipe else []) + list(overrides) + [
        f"model.name={run.name}", f"train.seed={run.seed}", "train.progress=false"]


def compare(models: Sequence[str], *, recipe: str | None, overrides: Sequence[str], out_dir: str | Path,
            seeds: Sequence[int] = (0,), title: str | None = None, jobs: int = 1,
            record: str | Path | None = None, figure: bool = True, data_label: str | None = None) -> dict[str, Any]:
    """Train each of ``models`` with the same recipe, overrides and seeds under ``out_dir``
    (``jobs`` runs at a time); write ``results.json`` and (unless ``figure`` is False, for callers
    that draw their own) ``curves.png``; return per-model results.
    ``record``: also one results row per run in ``record/<recipe name>.csv`` (the experiment is
    the recipe, e.g. docs/results/cifar10_fast.csv); ``data_label`` replaces the rows' data
    column (the data set's name), for runs on another copy of it (``data.root``), which the
    recipe column leaves out."""
    out = Path(out_dir)
    plan = plan_runs(models, recipe=recipe, overrides=overrides, out_dir=out, seeds=seeds)
    if jobs > 1:
        _run_parallel([(_train_args(recipe, overrides, r), r.run_dir) for r in plan
                       if not (r.run_dir / "final.json").is_file()], jobs)
    results: dict[str, Any] = {}
    for r in plan:
        if r.seed == seeds[0]:
            results[r.name] = []
        results[r.name].append(run_one(r.cfg, r.run_dir))
    firsts = [r for r in plan if r.seed == seeds[0]]
    if figure:
        plot_runs([r.run_dir for r in firsts], out / "curves.png", labels=[r.name for r in firsts], title=title)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if record:
        name = Path(recipe).stem if recipe else "compare"
        label = recipe_label(name, overrides)
        rows = [run_row(r.run_dir, experiment=name, recipe=label) for r in plan]
        record_runs([{**row, "data": data_label} if data_label else row for row in rows], record)
    return results


# Overrides that say where a run reads and writes or how it reports, not what it trains; or
# that a results row already holds in its own column (model, seed, iterations).
_NOT_IN_LABEL = ("data.root", "data.download", "model.name", "train.seed", "schedule.iterations",
                 "train.progress", "train.tensorboard", "train.log_every", "train.eval_every",
                 "train.checkpoint_every", "train.keep_last", "train.out_dir", "train.run_name",
                 "train.threads")


def recipe_label(name: str, overrides: Sequence[str]) -> str:
    """The ``recipe`` column of a compare run's results row: the recipe's name followed by the
    overrides that change what was trained (``cifar10_fast train.amp=bf16``), so a run with
    overrides never replaces the plain recipe's row with the same key."""
    kept = sorted(o for o in overrides if o.split("=", 1)[0] not in _NOT_IN_LABEL)
    return " ".join([name, *kept])


def summarize_runs(results: dict[str, Any], *, split: str = "test") -> list[dict[str, Any]]:
    """Per model: final train error (last logged window), eval error, mean and std over seeds."""
    import statistics

    rows = []
    for name, runs in results.items():
        errs = [r[split]["top1_err"] for r in runs if split in r]
        rows.append({
            "model": name,
            "seeds": len(runs),
            "err_mean": statistics.fmean(errs) if errs else float("nan"),
            "err_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
            "errs": errs,
        })
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = [h for h, _ in columns]
    body = [[(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k])) for _, k in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
    return "\n".join(line.rstrip() for line in lines)
