"""Runs of several networks with one recipe, compared side by side (the shape of every
experiment in He et al. 2016: plain vs residual, shallow vs deep)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from .config import Config, config_to_dict, load_config, yaml_load
from .engine.trainer import find_latest_checkpoint, train
from .errors import ReslearnError
from .plotting import plot_runs

__all__ = ["compare", "format_table"]


# Settings that change where data lives or how a run is shown, not what it trains: a finished or
# half-finished run may differ in these and still be reused.
_NEUTRAL = {"data.root", "data.workers", "data.download", "data.on_bad_file", "train.device", "train.progress",
            "train.tensorboard", "train.threads", "train.out_dir", "train.run_name", "train.keep_last", "recipe"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "kwargs" and k != "options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_run(cfg: Config, run_dir: Path) -> None:
    """Refuse to reuse ``run_dir`` (skip it as finished, or resume it) when it was trained with a
    different configuration: an experiment re-run with a new budget in the same folder must not
    silently report the old runs."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    old = _flat(yaml_load(saved.read_text()) or {})
    new = _flat(config_to_dict(cfg))
    for key in sorted(set(old) | set(new)):
        if key not in _NEUTRAL and old.get(key) != new.get(key):
            raise ReslearnError(f"{run_dir} holds a run with {key}={old.get(key)!r}, this experiment asks for "
                                f"{new.get(key)!r}; use another --out folder (or delete that run)")


def _run_one(cfg: Config, run_dir: Path) -> dict[str, Any]:
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


def compare(models: Sequence[str], *, recipe: str | None, overrides: Sequence[str], out_dir: str | Path,
            seeds: Sequence[int] = (0,), title: str | None = None, jobs: int = 1) -> dict[str, Any]:
    """Train each of ``models`` with the same recipe, overrides and seeds under ``out_dir``
    (``jobs`` runs at a time); write ``curves.png`` and ``results.json``; return per-model results."""
    out = Path(out_dir)
    results: dict[str, Any] = {}
    run_dirs, labels = [], []
    if jobs > 1:
        todo = []
        for name in models:
            for seed in seeds:
                run_dir = out / f"{name}-seed{seed}"
                # Fail fast on bad keys and on a folder holding a different run.
                check_same_run(load_config(recipe, list(overrides) + [f"model.name={name}", f"train.seed={seed}"]),
                               run_dir)
                if not (run_dir / "final.json").is_file():
                    args = (["--recipe", recipe] if recipe else []) + list(overrides) + [
                        f"model.name={name}", f"train.seed={seed}", "train.progress=false"]
                    todo.append((args, run_dir))
        _run_parallel(todo, jobs)
    for name in models:
        per_seed = []
        for seed in seeds:
            cfg = load_config(recipe, list(overrides) + [f"model.name={name}", f"train.seed={seed}"])
            run_dir = out / f"{name}-seed{seed}"
            res = _run_one(cfg, run_dir)
            per_seed.append(res)
            if seed == seeds[0]:
                run_dirs.append(run_dir)
                labels.append(name)
        results[name] = per_seed
    plot_runs(run_dirs, out / "curves.png", labels=labels, title=title)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


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
