"""One prepared GPU spell (about 15 minutes of a lent H100/H200): the paper's CIFAR-10 nets, fast.

In order, each within ``--budget-s`` (no run starts that its estimate says cannot end in time;
at the deadline the runs still going are stopped with SIGINT, which checkpoints them):
1. the training step on the device (benchmarks/train_step.py --device: eager / channels_last /
   bf16, images/s and GFLOP/s beside the device's matmul peak), on CUDA only;
2. ResNet-20 alone at the paper's full schedule (recipe cifar10: 64k iterations, batch 128)
   with the fast settings: data on the GPU (the engine holds in-memory sets on the training
   device), channels_last, bf16 autocast, and CUDA graphs through
   torch.compile(mode="reduce-overhead"); if that run fails with compile on, it is run again
   without (both are reported), and every later run then trains without it too. Goal (issue
   15): <= 60 s at the paper's 8.75%;
3. the fast recipe (cifar10_fast, issue 15: the same ResNet-20 to <= 8.75% in <= 30 epochs) with
   the same settings: ResNet-20 seed 0 alone (when ResNet-20's measured run, its training part
   scaled by the images the fast recipe trains, says it fits; the compile fallback as in 2.),
   then ResNet-20 seeds 1 and 2 and ResNet-56 seed 0, ``--jobs`` at a time, estimated from it;
   second because its 3 seeds are a result in minutes, where one deep Table 6 row takes longer;
4. as many Table 6 rows (ResNet-20 ... 110; 110 with its warm-up, recipe cifar10_deep) as fit,
   ``--jobs`` at a time as ``reslearn train`` subprocesses on the one GPU (a small net leaves most
   of it idle: several share it well), deepest first.
Every finished run becomes a results row (``reslearn.results.run_row``) in ``--record``/table6.csv
(experiment table6) or ``--record``/cifar10_fast.csv (experiment and recipe cifar10_fast, as
``reslearn compare --recipe cifar10_fast --record`` writes); ``--summary`` gets one JSON with the
step table, each run's images/s, wall time, errors and test-error curve, the fast recipe's test
error per model (each seed, mean and std) and what did not fit. Every run's config is checked
before the first trains (a bad one: one line, exit 2). The same script runs on the CPU at a tiny
budget (the tests do: ``--device cpu --iterations 8 ...``; 8 at least, for the fast recipe's
one-cycle rise), fp32 without compile there.

On a lent machine (files come back from $OUT only, 8 at most, so runs go to /tmp), with
../shared/data's cifar10-jpeg.tar.gz and prepare_cifar10.py copied into an ignored folder
shared_data/ of the checkout and carried (the CIFAR-10 python batches are over the 64 MiB):
    python3 shared_data/prepare_cifar10.py .data
    PYTHONPATH=src python3 benchmarks/gpu_spell.py --data .data --budget-s 330 --out /tmp/spell \\
        --record $OUT --summary $OUT/spell.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reslearn.checkpoint import find_latest_checkpoint  # noqa: E402
from reslearn.engine.logging import read_metrics  # noqa: E402
from reslearn.errors import ReslearnError  # noqa: E402
from reslearn.reproduce import budget_overrides  # noqa: E402
from reslearn.results import record_runs, run_row  # noqa: E402

EXPERIMENT = "table6"  # the rows reslearn reproduce cifar-table writes
FAST_RECIPE = "cifar10_fast"  # issue 15's fast recipe; its rows' experiment too, as compare --record
FAST_RUNS = (("resnet20", 0), ("resnet20", 1), ("resnet20", 2), ("resnet56", 0))  # the 3 seeds, and ResNet-56
NO_COMPILE = "train.compile=false"  # the fallback's override


@dataclass
class Job:
    """One training run of the spell and what became of it."""

    model: str
    recipe: str
    seed: int
    run_dir: Path
    overrides: list[str]
    extra: list[str] = field(default_factory=list)  # after the overrides: the compile fallback's
    status: str = "planned"  # planned | running | done | failed | stopped | skipped
    wall_s: float | None = None
    note: str = ""
    proc: Any = field(default=None, repr=False)
    started: float = 0.0

    def depth(self) -> int:
        return int(self.model.removeprefix("resnet"))


def fast_overrides(a: argparse.Namespace) -> list[str]:
    """The settings of every run: device, precision, memory format, compilation, budget."""
    cuda = a.device.startswith("cuda")
    o = [f"train.device={a.device}", "train.progress=false", "train.tensorboard=false",
         f"train.amp={a.amp or ('bf16' if cuda else 'none')}", f"train.channels_last={'true' if cuda else 'false'}"]
    mode = a.compile_mode if a.compile_mode is not None else ("reduce-overhead" if cuda else "")
    o += ["train.compile=true", f"train.compile_mode={mode}"] if mode else ["train.compile=false"]
    if a.data:
        o.append(f"data.root={a.data}")
    return o + budget_overrides(a.iterations, a.train_subset, a.test_subset) + list(a.overrides)


def plan(a: argparse.Namespace, common: list[str]) -> list[Job]:
    """ResNet-20 seed 0 first (the single-net measurement), then the ladder deepest first."""
    rest = sorted({d for d in a.depths}, reverse=True)
    jobs = [Job("resnet20", "cifar10", 0, Path(a.out) / "resnet20-seed0", common)]
    for d in rest:
        for s in range(a.seeds):
            if (d, s) != (20, 0):
                jobs.append(Job(f"resnet{d}", "cifar10_deep" if d >= 110 else "cifar10", s,
                                Path(a.out) / f"resnet{d}-seed{s}", common))
    return jobs


def plan_fast(a: argparse.Namespace, common: list[str]) -> list[Job]:
    """The fast recipe's runs (FAST_RUNS), ResNet-20 seed 0 first, in OUT/cifar10_fast/."""
    return [Job(m, FAST_RECIPE, s, Path(a.out) / FAST_RECIPE / f"{m}-seed{s}", common) for m, s in FAST_RUNS]


def job_overrides(job: Job) -> list[str]:
    """The config overrides of ``job`` (over its recipe)."""
    return [*job.overrides, *job.extra, f"model.name={job.model}", f"train.seed={job.seed}"]


def start(job: Job) -> None:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "reslearn.cli", "train", "--recipe", job.recipe, *job_overrides(job),
           "--run-dir", str(job.run_dir)]
    if find_latest_checkpoint(job.run_dir) is not None:  # a rerun of the spell continues a stopped run
        cmd.append("--resume")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    log = open(job.run_dir / "train.log", "w")
    job.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    job.proc.log = log
    job.status, job.started = "running", time.perf_counter()
    print(f"spell: start {job.model} seed {job.seed} ({job.recipe}) {' '.join(job.extra)}", flush=True)


def poll(job: Job) -> bool:
    """Whether ``job`` has ended (and then its status)."""
    if job.proc.poll() is None:
        return False
    job.proc.log.close()
    job.wall_s = time.perf_counter() - job.started
    if job.proc.returncode == 0 and (job.run_dir / "final.json").is_file():
        job.status = "done"
    else:
        lines = (job.run_dir / "train.log").read_text(errors="replace").strip().splitlines()
        job.status, job.note = "failed", (lines[-1] if lines else f"exit {job.proc.returncode}")
    print(f"spell: {job.status} {job.model} seed {job.seed} in {job.wall_s:.0f} s {job.note}", flush=True)
    return True


def stop(job: Job, wait_s: float = 30.0) -> None:
    """SIGINT (the engine checkpoints at the end of the iteration), then SIGKILL after ``wait_s``."""
    job.proc.send_signal(signal.SIGINT)
    try:
        job.proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        job.proc.kill()
        job.proc.wait()
    job.proc.log.close()
    job.status, job.wall_s, job.note = "stopped", time.perf_counter() - job.started, "at the spell's deadline"


def estimate_s(job: Job, t20: float, running: int) -> float:
    """A guess at a run's wall time: ResNet-20's measured one scaled by depth (the step's cost is
    linear in the layers) and by the runs already sharing the GPU (a small net leaves it mostly
    idle, so each extra one is counted as half a run, a guess the spell's own numbers refine)."""
    return t20 * job.depth() / 20 * (1 + 0.5 * running)


def train_s(job: Job) -> float | None:
    """The seconds ``job`` trained (its last metrics row; None before any)."""
    rows = read_metrics(job.run_dir / "metrics.csv") if (job.run_dir / "metrics.csv").is_file() else []
    return float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else None


def images(job: Job) -> int:
    """The training images ``job``'s resolved config steps through (iterations x batch)."""
    from reslearn.config import load_config

    cfg = load_config(job.recipe, job_overrides(job))
    return cfg.schedule.iterations * cfg.optim.batch_size * cfg.optim.accum_steps


def scaled_s(ref: Job, job: Job) -> float:
    """A guess at ``job``'s wall time, from ``ref``'s (a done run of the same depth): its time
    outside training (start-up, data loading) as it was, its training time scaled by the images
    ``job`` trains. inf where ``ref`` did not finish."""
    if ref.status != "done" or ref.wall_s is None:
        return float("inf")
    # at most the process's time: a resumed run's elapsed_s includes its earlier processes'
    trained = min(train_s(ref) or ref.wall_s, ref.wall_s)
    return ref.wall_s - trained + trained * images(job) / images(ref)


def inherit_fallback(ref: Job, jobs: list[Job]) -> None:
    """Runs after ``ref`` skip what failed there: compile, where ``ref`` needed the fallback."""
    for j in jobs:
        j.extra = list(dict.fromkeys([*j.extra, *ref.extra]))


def run_jobs(jobs: list[Job], *, deadline: float, jobs_at_once: int, t20: float) -> None:
    pending = [j for j in jobs if j.status == "planned"]
    running: list[Job] = []
    while pending or running:
        left = deadline - time.perf_counter()
        for j in list(pending):
            if len(running) >= jobs_at_once:
                break
            if estimate_s(j, t20, len(running)) < left:
                pending.remove(j)
                start(j)
                running.append(j)
        if not running:  # nothing else fits
            for j in pending:
                j.status, j.note = "skipped", f"estimated {estimate_s(j, t20, 0):.0f} s > {max(left, 0):.0f} s left"
            return
        time.sleep(0.5)
        running = [j for j in running if not poll(j)]
        if time.perf_counter() >= deadline:
            for j in running:
                stop(j)
            for j in pending:
                j.status, j.note = "skipped", "the spell's deadline"
            return


def run_single(job: Job, *, deadline: float, compile_on: bool) -> None:
    """One run alone (a measurement); without compile again (``job.extra``) if it failed with it."""
    start(job)
    while not poll(job):
        if time.perf_counter() >= deadline:
            stop(job)
            return
        time.sleep(0.5)
    if job.status == "failed" and compile_on and time.perf_counter() < deadline:
        first_note = f"with compile: {job.note}; run again without"
        job.extra = [*job.extra, NO_COMPILE]
        run_single(job, deadline=deadline, compile_on=False)
        job.note = first_note + (f"; {job.note}" if job.note else "")


def run_fast(jobs: list[Job], *, ref: Job, deadline: float, jobs_at_once: int, compile_on: bool) -> None:
    """The fast recipe: ``jobs[0]`` alone when ``scaled_s`` from ``ref`` (ResNet-20's full run)
    says it ends in time, then the others ``jobs_at_once`` at a time, estimated from it."""
    first, rest = jobs[0], jobs[1:]
    inherit_fallback(ref, jobs)
    guess, left = scaled_s(ref, first), deadline - time.perf_counter()
    if guess < left:
        run_single(first, deadline=deadline, compile_on=compile_on and NO_COMPILE not in first.extra)
    else:
        first.status, first.note = "skipped", f"estimated {guess:.0f} s > {max(left, 0):.0f} s left"
    inherit_fallback(first, rest)
    run_jobs(rest, deadline=deadline, jobs_at_once=jobs_at_once,
             t20=first.wall_s if first.status == "done" else float("inf"))


def describe(job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {"model": job.model, "recipe": job.recipe, "seed": job.seed, "status": job.status,
                           "process_wall_s": round(job.wall_s, 1) if job.wall_s else None, "note": job.note}
    metrics = job.run_dir / "metrics.csv"
    if metrics.is_file():
        rows = read_metrics(metrics)
        rates = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
        out["images_per_s"] = round(statistics.median(rates), 1) if rates else None
        trained = train_s(job)
        out["train_wall_s"] = round(trained, 1) if trained is not None else None
        out["curve"] = [(int(r["iteration"]), float(r["test_err"])) for r in rows if r.get("test_err")]
    final = job.run_dir / "final.json"
    if job.status == "done" and final.is_file():
        doc = json.loads(final.read_text())
        out["test_err"], out["val_err"] = doc.get("test", {}).get("top1_err"), doc.get("val", {}).get("top1_err")
    return out


def record(jobs: list[Job], *, experiment: str, folder: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The results rows of ``jobs``' finished runs into ``folder/<experiment>.csv``: its path
    (None when none finished) and the rows."""
    rows = [run_row(j.run_dir, experiment=experiment, recipe=j.recipe) for j in jobs if j.status == "done"]
    return (str(record_runs(rows, folder)) if rows else None), rows


def by_model(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model's seeds, test errors (%), their mean and std (None for one seed), epochs, and
    training seconds, from results rows."""
    out: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and r["test_err"] != ""]
        errs = [float(r["test_err"]) for r in mine]
        out[model] = {"seeds": [r["seed"] for r in mine], "test_err": errs,
                      "mean": round(statistics.mean(errs), 2) if errs else None,
                      "std": round(statistics.stdev(errs), 2) if len(errs) > 1 else None,
                      "epochs": [r["epochs"] for r in mine], "wall_s": [r["wall_s"] for r in mine]}
    return out


def step_bench(a: argparse.Namespace) -> dict[str, Any] | None:
    if not a.step_bench:
        return None
    import train_step

    path = Path(a.out) / "train_step.json"
    train_step.main(["--device", a.device, "--no-compile", "--repeats", "5", "--iters", "20",
                     "--matmul-n", "8192" if a.device.startswith("cuda") else "512", "--json", str(path)])
    return json.loads(path.read_text())


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if _has_cuda() else "cpu")
    p.add_argument("--data", default="", help="data.root (the folder holding cifar-10-batches-py)")
    p.add_argument("--budget-s", type=float, default=780.0, help="no run starts after this that cannot end by it")
    p.add_argument("--grace-s", type=float, default=15.0, help="kept at the end for the summary")
    p.add_argument("--jobs", type=int, default=4, help="Table 6 runs at once on the one device")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 32, 44, 56, 110])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--iterations", type=int, help="shrink the paper's schedule (tests); default: the full 64k")
    p.add_argument("--train-subset", type=int, default=0)
    p.add_argument("--test-subset", type=int, default=0)
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], help="default: bf16 on CUDA, none on the CPU")
    p.add_argument("--compile-mode", help="torch.compile mode ('' = no compile); default: reduce-overhead on CUDA, off on the CPU")
    p.add_argument("--step-bench", action=argparse.BooleanOptionalAction, default=None,
                   help="time the training step first (default: on CUDA)")
    p.add_argument("--out", default="runs/gpu_spell", help="run folders")
    p.add_argument("--record", help="results rows into this folder's table6.csv (default: OUT)")
    p.add_argument("--summary", help="the JSON summary (default: OUT/spell.json)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value")
    a = p.parse_args(argv)
    a.step_bench = a.device.startswith("cuda") if a.step_bench is None else a.step_bench
    return a


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_spell(a: argparse.Namespace, jobs: list[Job], fast: list[Job], *, compile_on: bool, deadline: float) -> None:
    """Steps 2-4 of the docstring: the Table 6 jobs (ResNet-20's full run first) and the fast
    recipe's; each job then says what became of it."""
    first = jobs[0]
    if time.perf_counter() < deadline:
        run_single(first, deadline=deadline, compile_on=compile_on)
    else:
        first.status, first.note = "skipped", "no time left"
    run_fast(fast, ref=first, deadline=deadline, jobs_at_once=a.jobs, compile_on=compile_on)
    inherit_fallback(first, jobs[1:])
    run_jobs(jobs, deadline=deadline, jobs_at_once=a.jobs, t20=first.wall_s if first.status == "done" else float("inf"))


def print_summary(summary: dict[str, Any]) -> None:
    print(f"{'run':<16}{'recipe':<14}{'status':<9}{'test err %':>11}{'img/s':>9}{'train s':>9}{'process s':>10}  note")
    for r in summary["runs"]:
        print(f"{r['model'] + '-s' + str(r['seed']):<16}{r['recipe']:<14}{r['status']:<9}{_num(r.get('test_err')):>11}"
              f"{_num(r.get('images_per_s')):>9}{_num(r.get('train_wall_s')):>9}{_num(r.get('process_wall_s')):>10}"
              f"  {r['note']}")
    fast = summary[FAST_RECIPE]
    for model, m in fast["models"].items():
        print(f"{FAST_RECIPE} {model}: test error % {m['test_err']}, mean {_num(m['mean'])}, std {_num(m['std'])}")
    done = sum(r["status"] == "done" for r in summary["runs"])
    csvs = ", ".join(p for p in (summary["results_csv"], fast["results_csv"]) if p) or "none"
    print(f"spell: {done} of {len(summary['runs'])} runs done in {summary['wall_s']:.0f} s; rows: {csvs}")


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    t0 = time.perf_counter()
    deadline = t0 + a.budget_s - a.grace_s
    Path(a.out).mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"device": a.device, "budget_s": a.budget_s,
                               "argv": sys.argv[1:] if argv is None else list(argv)}
    summary["train_step"] = step_bench(a) if time.perf_counter() + 60 < deadline else None
    common = fast_overrides(a)
    summary["overrides"] = common
    jobs, fast = plan(a, common), plan_fast(a, common)
    try:  # every run's config, before the first trains: a bad one is one line now, not a failed run later
        for j in [*jobs, *fast]:
            images(j)
    except ReslearnError as e:
        print(f"spell: {e}", file=sys.stderr)
        return 2
    run_spell(a, jobs, fast, compile_on="train.compile=true" in common, deadline=deadline)
    summary["results_csv"], _ = record(jobs, experiment=EXPERIMENT, folder=a.record or a.out)
    fast_csv, fast_rows = record(fast, experiment=FAST_RECIPE, folder=a.record or a.out)
    summary[FAST_RECIPE] = {"results_csv": fast_csv, "models": by_model(fast_rows)}
    summary["runs"] = [describe(j) for j in [jobs[0], *fast, *jobs[1:]]]  # in the order they ran
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(a.summary or Path(a.out) / "spell.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return 0


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) and v < 100 else f"{v:.0f}"


if __name__ == "__main__":
    sys.exit(main())
