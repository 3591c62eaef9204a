"""benchmarks/gpu_spell.py on the CPU at a tiny budget: the runs it starts (Table 6 and the fast
recipe), the results rows it records, the summary it writes, the budget that stops it starting
runs, and the compile fallback that later runs keep."""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, require_data

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_spell  # noqa: E402


@pytest.fixture(scope="module")
def cifar_root():
    root = Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
    require_data(root / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)")
    return root


def _args(root, out, *extra):
    # 8 iterations: the fast recipe's one-cycle rise (20% of the run) must span more than one
    return ["--device", "cpu", "--data", str(root), "--iterations", "8", "--train-subset", "256",
            "--test-subset", "128", "--depths", "20", "32", "--jobs", "2", "--out", str(out),
            "--summary", str(out / "s.json"), *extra,
            "--set", "model.kwargs.width=4", "train.threads=1", "optim.batch_size=32"]


def test_tiny_spell_records_rows_and_summary(cifar_root, tmp_path, capsys):
    assert gpu_spell.main(_args(cifar_root, tmp_path / "spell", "--budget-s", "600",
                                "--record", str(tmp_path / "results"))) == 0
    from reslearn.results import read_results

    rows = read_results(tmp_path / "results" / "table6.csv")
    assert [(r["model"], r["recipe"], r["iterations"]) for r in rows] == [("resnet20", "cifar10", "8"),
                                                                            ("resnet32", "cifar10", "8")]
    fast = read_results(tmp_path / "results" / "cifar10_fast.csv")  # what compare --record writes
    assert [(r["experiment"], r["model"], r["recipe"], r["seed"], r["iterations"]) for r in fast] == [
        ("cifar10_fast", "resnet20", "cifar10_fast", "0", "8"), ("cifar10_fast", "resnet20", "cifar10_fast", "1", "8"),
        ("cifar10_fast", "resnet20", "cifar10_fast", "2", "8"), ("cifar10_fast", "resnet56", "cifar10_fast", "0", "8")]
    assert all(0 <= float(r["test_err"]) <= 100 and r["device"] == "cpu" for r in rows + fast)
    summary = json.loads((tmp_path / "spell" / "s.json").read_text())
    assert [(r["recipe"], r["status"]) for r in summary["runs"]] == [
        ("cifar10", "done"), *[("cifar10_fast", "done")] * 4, ("cifar10", "done")]  # in the order they ran
    assert all(r["images_per_s"] > 0 and r["curve"] and r["test_err"] is not None for r in summary["runs"])
    assert "train.compile=false" in summary["overrides"] and "train.amp=none" in summary["overrides"]
    models = summary["cifar10_fast"]["models"]
    assert models["resnet20"]["seeds"] == [0, 1, 2] and models["resnet56"]["seeds"] == [0]
    errs = [float(r["test_err"]) for r in fast[:3]]
    assert models["resnet20"]["test_err"] == errs and models["resnet20"]["mean"] == pytest.approx(
        statistics.mean(errs), abs=0.01) and models["resnet20"]["std"] == pytest.approx(statistics.stdev(errs), abs=0.01)
    assert models["resnet56"]["std"] is None
    # the fast runs trained with the spell's settings over their own recipe
    cfg = (tmp_path / "spell" / "cifar10_fast" / "resnet56-seed0" / "config.yaml").read_text()
    assert "compile: false" in cfg and "amp: none" in cfg and "eval_flip: true" in cfg
    assert "6 of 6 runs done" in capsys.readouterr().out


def test_no_run_starts_without_budget(cifar_root, tmp_path):
    out = tmp_path / "spell"
    assert gpu_spell.main(_args(cifar_root, out, "--budget-s", "0")) == 0
    summary = json.loads((out / "s.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["skipped"] * 6
    assert not (out / "table6.csv").exists() and not (out / "resnet20-seed0").exists()
    assert not (out / "cifar10_fast.csv").exists() and not (out / "cifar10_fast").exists()
    assert summary["cifar10_fast"] == {"results_csv": None, "models": {}}


def test_a_bad_config_fails_before_any_run(cifar_root, tmp_path, capsys):
    out = tmp_path / "spell"
    args = _args(cifar_root, out, "--budget-s", "600")
    args[args.index("--iterations") + 1] = "4"  # 0.2 x 4: the fast recipe's one-cycle rise ends at iteration 0
    assert gpu_spell.main(args) == 2
    assert "onecycle_pct_start x schedule.iterations must be > 1" in capsys.readouterr().err
    assert not (out / "resnet20-seed0").exists() and not (out / "s.json").exists()


def test_estimate_scales_with_depth_and_sharing():
    job = gpu_spell.Job("resnet110", "cifar10_deep", 0, Path("x"), [])
    assert gpu_spell.estimate_s(job, 60.0, 0) == pytest.approx(330.0)
    assert gpu_spell.estimate_s(job, 60.0, 2) == pytest.approx(660.0)


def test_fast_estimate_scales_the_training_part_by_the_images(tmp_path):
    ref = gpu_spell.Job("resnet20", "cifar10", 0, tmp_path, [], status="done", wall_s=100.0)
    (tmp_path / "metrics.csv").write_text("iteration,elapsed_s\n32000,40.0\n64000,70.0\n")
    fast = gpu_spell.Job("resnet20", "cifar10_fast", 0, tmp_path / "f", [])
    # 30 s outside training, and 70 s x (2910 x 512) / (64000 x 128) images
    assert gpu_spell.scaled_s(ref, fast) == pytest.approx(30.0 + 70.0 * 2910 * 512 / (64000 * 128))
    ref.status = "stopped"
    assert gpu_spell.scaled_s(ref, fast) == float("inf")


def _fake_runs(monkeypatch):
    """Runs that fail with compile and succeed without, instantly; the (model, seed, extra) started."""
    started = []

    def start(job):
        started.append((job.model, job.seed, list(job.extra)))
        job.status = "running"

    def poll(job):
        ok = gpu_spell.NO_COMPILE in job.extra
        job.status, job.note, job.wall_s = ("done", "", 1.0) if ok else ("failed", "compile broke", 1.0)
        return True

    monkeypatch.setattr(gpu_spell, "start", start)
    monkeypatch.setattr(gpu_spell, "poll", poll)
    return started


def test_compile_fallback_is_kept_by_the_later_runs(tmp_path, monkeypatch):
    started = _fake_runs(monkeypatch)
    ref = gpu_spell.Job("resnet20", "cifar10", 0, tmp_path / "ref", [])
    gpu_spell.run_single(ref, deadline=time.perf_counter() + 60, compile_on=True)
    assert ref.status == "done" and ref.note.startswith("with compile: compile broke; run again without")
    fast = gpu_spell.plan_fast(gpu_spell.parse(["--out", str(tmp_path)]), [])
    monkeypatch.setattr(gpu_spell, "scaled_s", lambda ref, job: 1.0)
    gpu_spell.run_fast(fast, ref=ref, deadline=time.perf_counter() + 60, jobs_at_once=2, compile_on=True)
    no = [gpu_spell.NO_COMPILE]
    assert started == [("resnet20", 0, []), ("resnet20", 0, no), ("resnet20", 0, no), ("resnet20", 1, no),
                       ("resnet20", 2, no), ("resnet56", 0, no)]
    assert [j.status for j in fast] == ["done"] * 4


def test_no_fast_run_starts_that_its_estimate_says_cannot_end(tmp_path, monkeypatch):
    started = _fake_runs(monkeypatch)
    ref = gpu_spell.Job("resnet20", "cifar10", 0, tmp_path / "ref", [], status="done", wall_s=1.0)
    fast = gpu_spell.plan_fast(gpu_spell.parse(["--out", str(tmp_path)]), [])
    monkeypatch.setattr(gpu_spell, "scaled_s", lambda ref, job: 100.0)
    gpu_spell.run_fast(fast, ref=ref, deadline=time.perf_counter() + 60, jobs_at_once=2, compile_on=True)
    assert started == [] and [j.status for j in fast] == ["skipped"] * 4
    assert fast[0].note.startswith("estimated 100 s > ")


def test_cuda_defaults_are_the_fast_settings():
    a = gpu_spell.parse(["--device", "cuda", "--data", "d"])
    o = gpu_spell.fast_overrides(a)
    assert {"train.amp=bf16", "train.channels_last=true", "train.compile=true",
            "train.compile_mode=reduce-overhead", "data.root=d"} <= set(o)
    assert a.step_bench and not any(k.startswith("schedule.") for k in o)  # the paper's full schedule
