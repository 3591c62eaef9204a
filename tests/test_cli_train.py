"""Every training-related CLI command end to end once, on real data, and the user-error paths."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import ROOT, require_data

TINY = ["data.train_subset=512", "data.test_subset=256", "model.kwargs.width=4", "optim.batch_size=32",
        "schedule.iterations=8", "schedule.milestones=[6]", "train.eval_every=4", "train.log_every=2",
        "train.checkpoint_every=4", "train.progress=false"]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "reslearn.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    r = run("train", "--recipe", "cifar10_quick", "--model", "resnet20", f"data.root={data_root}", *TINY,
            "--run-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "test error" in r.stdout
    return out


def test_train_writes_the_run_folder(trained):
    for f in ("config.yaml", "run.json", "metrics.csv", "model.safetensors", "best.safetensors",
              "final.json", "curves.png"):
        assert (trained / f).is_file(), f
    assert list((trained / "tensorboard").glob("events.*")), "TensorBoard events missing"
    assert "width: 4" in (trained / "config.yaml").read_text()


def test_eval_and_predict(trained, data_root):
    r = run("eval", str(trained / "model.safetensors"), "--json", "--limit", "300")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["n"] == 300  # --limit replaces the run's data.test_subset (256)
    assert 0 <= res["top1_err"] <= 100 and res["top5_err"] <= res["top1_err"]
    final = json.loads((trained / "final.json").read_text())
    r2 = run("eval", str(trained / "model.safetensors"), "--json", "--limit", "256")
    assert abs(json.loads(r2.stdout)["top1_err"] - final["test"]["top1_err"]) < 1e-6
    imgs = sorted((data_root / "cifar10-jpeg" / "test" / "cat").glob("*.jpg"))[:2]
    r = run("predict", str(trained / "model.safetensors"), *map(str, imgs), "--json")
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout)
    assert len(preds) == 2 and len(preds[0]["top"]) == 5
    probs = [p for _, p in preds[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert {c for c, _ in preds[0]["top"]} <= {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                               "horse", "ship", "truck"}


def test_plot_recipes_and_help(trained, tmp_path):
    r = run("plot", str(trained), str(trained), "-o", str(tmp_path / "c.png"))
    assert r.returncode == 0 and (tmp_path / "c.png").stat().st_size > 1000
    r = run("plot", str(trained), str(trained), "-o", str(tmp_path / "l.png"), "--labels", "fp32", "bf16",
            "--ylim", "0", "50")
    assert r.returncode == 0 and (tmp_path / "l.png").stat().st_size > 1000
    r = run("plot", str(trained), str(trained), "-o", str(tmp_path / "x.png"), "--labels", "one")
    assert r.returncode == 2 and "--labels gives 1 labels for 2 run folders" in r.stderr
    assert not (tmp_path / "x.png").exists()
    r = run("recipes")
    assert "cifar10_quick" in r.stdout and "Target" in r.stdout
    r = run("--help")
    for cmd in ("train", "eval", "predict", "plot", "compare", "demo", "summary", "models"):
        assert cmd in r.stdout


def test_compare_and_demo(data_root, tmp_path):
    r = run("compare", "resnet20", "plain20", "--out", str(tmp_path / "cmp"), "--set", f"data.root={data_root}", *TINY)
    assert r.returncode == 0, r.stderr
    assert "resnet20" in r.stdout and "plain20" in r.stdout and (tmp_path / "cmp" / "curves.png").is_file()
    # a second call skips the finished runs
    r2 = run("compare", "resnet20", "plain20", "--out", str(tmp_path / "cmp"), "--set", f"data.root={data_root}", *TINY)
    assert r2.returncode == 0 and r2.stdout == r.stdout
    r = run("demo", "--out", str(tmp_path / "demo"), "--set", *TINY, env={"RESLEARN_DATA_DIR": str(data_root)})
    assert r.returncode == 0, r.stderr
    assert "train error %" in r.stdout and "plain20" in r.stdout
    assert (tmp_path / "demo" / "curves.png").is_file()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--recipe", "cifar10_quick", "data.root=/nonexistent/place"], "/nonexistent/place"),
        (["train", "--recipe", "cifar10_quick", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["train", "--recipe", "cifar10_quick", "--model", "resnet21"], "unknown model name 'resnet21'"),
        (["eval", "/nonexistent.safetensors"], "not found"),
    ],
)
def test_user_errors_are_one_line(args, needle, tmp_path):
    r = run(*args, "--run-dir", str(tmp_path / "x")) if args[0] == "train" else run(*args)
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and "warning:" not in ln]
    assert len(err) == 1 and needle in err[0], r.stderr
    assert all(ln.startswith("reslearn") for ln in r.stderr.strip().splitlines()), r.stderr


def test_channel_mismatch_is_an_error(tmp_path):
    require_data(pathlib.Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"), "Fashion-MNIST (Debian)")
    r = run("train", "--recipe", "cifar10_quick", "data.name=fashion-mnist", "model.kwargs.in_chans=3",
            "--run-dir", str(tmp_path / "x"))
    assert r.returncode == 2 and "in_chans=3 but fashion-mnist images have 1 channels" in r.stderr
