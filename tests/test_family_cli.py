"""One real training run through the CLI for a model of each residual family (pre-activation
ResNet, wide ResNet, highway net, Inception-ResNet), each started from its paper recipe with a
tiny budget; and the recipes' iteration arithmetic."""

import csv
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, require_data
from reslearn.checkpoint import load_tensors
from reslearn.config import load_config

TINY = ["data.train_subset=64", "data.test_subset=64", "optim.batch_size=8", "schedule.iterations=2",
        "train.eval_every=2", "train.log_every=1", "train.checkpoint_every=2", "train.progress=false",
        "train.tensorboard=false"]


def run_train(*args):
    return subprocess.run([sys.executable, "-m", "reslearn.cli", "train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))


def final_error(run_dir: pathlib.Path) -> float:
    final = json.loads((run_dir / "final.json").read_text())
    err = final["test"]["top1_err"]
    assert math.isfinite(err) and 0 <= err <= 100
    assert math.isfinite(final["test"]["loss"])
    return err


@pytest.fixture(scope="module")
def data_root():
    root = pathlib.Path(os.environ.get("RESLEARN_DATA_DIR", ROOT / ".data"))
    require_data(root / "cifar-10-batches-py", "CIFAR-10 (scripts/prepare_data.sh)")
    return root


@pytest.mark.parametrize("recipe,model,extra", [
    ("preact_cifar10", "preact_resnet110", ["model.kwargs.width=4"]),  # 110 layers, narrow
    ("wrn_cifar10", "wrn_16_4", []),
    ("highway_cifar10", "highway_cifar", []),
])
def test_cifar_family_trains_from_its_recipe(recipe, model, extra, data_root, tmp_path):
    out = tmp_path / "run"
    r = run_train("--recipe", recipe, "--model", model, f"data.root={data_root}", *TINY, *extra,
                  "--run-dir", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    final_error(out)
    assert f"name: {model}" in (out / "config.yaml").read_text()
    lrs = [float(row["lr"]) for row in csv.DictReader((out / "metrics.csv").open())]
    # preact: both iterations inside the 400-iteration warm-up at 0.01
    assert lrs == [{"preact_cifar10": 0.01, "wrn_cifar10": 0.1, "highway_cifar10": 0.025}[recipe]] * 2


def test_inception_resnet_trains_with_rmsprop(data_root, tmp_path):
    """Inception-ResNet-v2 (the recipe's RMSProp and exponential decay) on a tiny 6-class folder
    of CIFAR JPEGs resized to 75x75, the smallest size every stem and reduction accepts."""
    jpeg = require_data(data_root / "cifar10-jpeg", "CIFAR-10 JPEG copy")
    folder = tmp_path / "tiny"
    classes = sorted(p.name for p in (jpeg / "train").iterdir() if p.is_dir())[:6]
    for split, src, n in (("train", "train", 4), ("val", "test", 2)):
        for c in classes:
            (folder / split / c).mkdir(parents=True)
            for f in sorted((jpeg / src / c).glob("*.jpg"))[:n]:
                shutil.copy(f, folder / split / c / f.name)
    out = tmp_path / "run"
    r = run_train("--recipe", "inception_imagenet", "data.name=imagefolder-memory", f"data.root={folder}",
                  "data.image_size=75", "data.workers=1", "optim.batch_size=6", "schedule.iterations=2",
                  "schedule.decay_every=1", "train.eval_every=2", "train.log_every=1",
                  "train.checkpoint_every=2", "train.progress=false", "train.tensorboard=false",
                  "train.channels_last=false", "--run-dir", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    final_error(out)
    _, meta = load_tensors(next((out / "checkpoints").glob("iter-*.safetensors")))
    assert meta["model"] == "inception_resnet_v2" and meta["model_kwargs"]["num_classes"] == 6
    group = meta["optimizer"]["param_groups"][0]
    assert group["alpha"] == 0.9 and group["eps"] == 1.0 and group["momentum"] == 0.9
    assert group["lr"] == pytest.approx(0.045 * 0.94)  # iteration 1: one decay step


@pytest.mark.parametrize("recipe,iters,milestones", [
    ("wrn_cifar10", 200 * 390, [60 * 390, 120 * 390, 160 * 390]),  # 50000 // 128 = 390 per epoch
    ("preact_cifar10", 64000, [32000, 48000]),
    ("highway_cifar10", 200000, [100000, 150000, 175000]),
])
def test_cifar_recipe_schedules(recipe, iters, milestones):
    cfg = load_config(recipe)
    assert (cfg.schedule.iterations, cfg.schedule.milestones) == (iters, milestones)
    assert cfg.optim.name == "sgd"


def test_inception_recipe_schedule():
    cfg = load_config("inception_imagenet")
    per_epoch = 1_281_167 // cfg.optim.batch_size
    assert cfg.optim.name == "rmsprop" and cfg.schedule.kind == "exponential"
    assert cfg.schedule.decay_every == 2 * per_epoch and cfg.schedule.iterations == 100 * per_epoch
    assert (cfg.optim.lr, cfg.schedule.gamma, cfg.optim.rmsprop_decay, cfg.optim.rmsprop_eps) == (0.045, 0.94, 0.9, 1.0)
