"""benchmarks/gpu_spell.py on the CPU at a tiny budget: the runs it starts, the results rows it
records, the summary it writes, and the budget that stops it starting runs."""

import json
import os
import sys
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
    return ["--device", "cpu", "--data", str(root), "--iterations", "4", "--train-subset", "256",
            "--test-subset", "128", "--depths", "20", "32", "--jobs", "2", "--out", str(out),
            "--summary", str(out / "s.json"), *extra,
            "--set", "model.kwargs.width=4", "train.threads=1", "optim.batch_size=32"]


def test_tiny_spell_records_rows_and_summary(cifar_root, tmp_path, capsys):
    assert gpu_spell.main(_args(cifar_root, tmp_path / "spell", "--budget-s", "600",
                                "--record", str(tmp_path / "results"))) == 0
    from reslearn.results import read_results

    rows = read_results(tmp_path / "results" / "table6.csv")
    assert [(r["model"], r["recipe"], r["iterations"]) for r in rows] == [("resnet20", "cifar10", "4"),
                                                                            ("resnet32", "cifar10", "4")]
    assert all(0 <= float(r["test_err"]) <= 100 and r["device"] == "cpu" for r in rows)
    summary = json.loads((tmp_path / "spell" / "s.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done", "done"]
    assert all(r["images_per_s"] > 0 and r["curve"] and r["test_err"] is not None for r in summary["runs"])
    assert "train.compile=false" in summary["overrides"] and "train.amp=none" in summary["overrides"]
    assert "2 of 2 runs done" in capsys.readouterr().out


def test_no_run_starts_without_budget(cifar_root, tmp_path):
    out = tmp_path / "spell"
    assert gpu_spell.main(_args(cifar_root, out, "--budget-s", "0")) == 0
    summary = json.loads((out / "s.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["skipped", "skipped"]
    assert not (out / "table6.csv").exists() and not (out / "resnet20-seed0").exists()


def test_estimate_scales_with_depth_and_sharing():
    job = gpu_spell.Job("resnet110", "cifar10_deep", 0, Path("x"), [])
    assert gpu_spell.estimate_s(job, 60.0, 0) == pytest.approx(330.0)
    assert gpu_spell.estimate_s(job, 60.0, 2) == pytest.approx(660.0)


def test_cuda_defaults_are_the_fast_settings():
    a = gpu_spell.parse(["--device", "cuda", "--data", "d"])
    o = gpu_spell.fast_overrides(a)
    assert {"train.amp=bf16", "train.channels_last=true", "train.compile=true",
            "train.compile_mode=reduce-overhead", "data.root=d"} <= set(o)
    assert a.step_bench and not any(k.startswith("schedule.") for k in o)  # the paper's full schedule
